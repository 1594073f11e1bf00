"""Multi-type bundles: loading and card checks, head selection, one encoder pass in the
engine (same entities as each head alone), mixed requests, evaluation by dataset."""

import json
import shutil

import pytest

from openmed_ray.annotate.annotator import Annotator
from openmed_ray.datasets import get_dataset
from openmed_ray.errors import OpenMedError
from openmed_ray.models.adapters import identify_adapter, load_predictor
from openmed_ray.models.bundle import BundleError, export_transformers, load_bundle
from openmed_ray.models.catalog import UnknownAdapterError, list_adapters
from openmed_ray.train.evaluate import evaluate_adapter

TEXTS = [
    "The patient was given aspirin after severe hepatitis. Cisplatin and nephrotoxicity.",
    "Ibuprofen with cocaine , and the patient had asthma .",
]


def entity_set(results):
    return {
        (i, e.start, e.end, e.label, e.adapter, round(e.score, 5))
        for i, r in enumerate(results)
        for e in r.entities
    }


def test_bundle_loads_every_head(tiny_multitask_bundle):
    bundle = load_bundle(tiny_multitask_bundle)
    assert bundle.model.head_names == ["chemical", "disease"]
    assert bundle.head_for("BC5CDR-disease") == "disease" and bundle.head_for("BC2GM") is None
    with pytest.raises(BundleError, match="multi-type bundle with heads"):
        bundle.labels  # noqa: B018
    with pytest.raises(BundleError, match="multi-type"):
        export_transformers(bundle, tiny_multitask_bundle.parent / "hf")


def test_labels_that_disagree_with_the_card_are_refused(tiny_multitask_bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_multitask_bundle, broken)
    labels = json.loads((broken / "labels.json").read_text())
    labels["heads"]["disease"] = ["O", "B-Disease", "I-Disease", "B-Extra", "I-Extra"]
    (broken / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(BundleError, match="head 'disease' has labels"):
        load_bundle(broken)
    labels["heads"] = {"chemical": labels["heads"]["chemical"]}
    (broken / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(BundleError, match="card's heads"):
        load_bundle(broken)


def test_heads_are_selected_by_name_or_entity_type(tiny_multitask_bundle, tiny_bundle):
    path = str(tiny_multitask_bundle)
    assert identify_adapter(path).heads == ("chemical", "disease")
    assert identify_adapter(f"{path}:disease+Chemical").heads == ("disease", "chemical")
    with pytest.raises(UnknownAdapterError, match=r"no head or entity type 'Gene'.*chemical"):
        identify_adapter(f"{path}:Gene")
    with pytest.raises(UnknownAdapterError, match="only multi-type bundles take a head"):
        identify_adapter(f"{tiny_bundle}:chemical")
    predictor = load_predictor(f"{path}:disease")
    assert [h.name for h in predictor.heads] == ["tiny-multi:disease"]
    assert predictor.model.head_names == ["disease"]


def test_one_pass_finds_what_each_head_finds_alone(tiny_multitask_bundle):
    path = str(tiny_multitask_bundle)
    together = Annotator([path], threads=1)
    (backend,) = together.backends
    assert len(backend.predictors) == 1 and together.n_sources == 2  # one encoder pass
    found = entity_set(together.annotate(TEXTS))
    alone = entity_set(Annotator([f"{path}:chemical"], threads=1).annotate(TEXTS))
    alone |= entity_set(Annotator([f"{path}:disease"], threads=1).annotate(TEXTS))
    assert found == alone
    assert {e[4] for e in found} == {"tiny-multi:chemical", "tiny-multi:disease"}
    assert {e[3] for e in found if e[4] == "tiny-multi:chemical"} == {"Chemical"}
    # Selections of one bundle are merged back into a single pass.
    merged = Annotator([f"{path}:chemical", f"{path}:disease"], threads=1)
    assert len(merged.backends[0].predictors) == 1
    assert entity_set(merged.annotate(TEXTS)) == found


def test_mixed_requests_run_in_one_annotator(tiny_multitask_bundle, tiny_bundle):
    mixed = Annotator([str(tiny_multitask_bundle), str(tiny_bundle)], threads=1)
    results = mixed.annotate(TEXTS)
    sources = {e.adapter for r in results for e in r.entities}
    assert sources == {"tiny-multi:chemical", "tiny-multi:disease", "tiny"}
    alone = Annotator([str(tiny_bundle)], threads=1).annotate(TEXTS)
    assert {e for e in entity_set(results) if e[4] == "tiny"} == entity_set(alone)


def test_two_bundles_under_one_name_are_refused(tiny_multitask_bundle, tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(tiny_multitask_bundle, other)
    (other / "head.safetensors").write_bytes((other / "head.safetensors").read_bytes() + b" ")
    with pytest.raises(OpenMedError, match="two different multi-type bundles"):
        Annotator([f"{tiny_multitask_bundle}:chemical", f"{other}:disease"], threads=1)


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_reduced_precision_keeps_one_pass(tiny_multitask_bundle, precision):
    results = Annotator([str(tiny_multitask_bundle)], threads=1, precision=precision).annotate(
        TEXTS
    )
    reference = Annotator([str(tiny_multitask_bundle)], threads=1).annotate(TEXTS)
    spans = {(i, e.start, e.end, e.adapter) for i, r in enumerate(results) for e in r.entities}
    assert spans == {
        (i, e.start, e.end, e.adapter) for i, r in enumerate(reference) for e in r.entities
    }


def test_evaluate_picks_the_head_of_the_dataset(tiny_multitask_bundle, tiny_multitask_data_root):
    card = load_bundle(tiny_multitask_bundle).card
    for head in card["heads"]:
        report = evaluate_adapter(
            str(tiny_multitask_bundle), head["dataset"], data_root=str(tiny_multitask_data_root)
        )
        assert report.to_dict() == head["metrics"]["test"]
    # NCBI-disease has no head of its own: the disease head is named explicitly.
    named = evaluate_adapter(
        f"{tiny_multitask_bundle}:disease",
        "BC5CDR-disease",
        data_root=str(tiny_multitask_data_root),
    )
    assert named.f1 == card["heads"][1]["metrics"]["test"]["f1"]
    with pytest.raises(OpenMedError, match="no head trained on NCBI-disease"):
        evaluate_adapter(
            str(tiny_multitask_bundle),
            "NCBI-disease",
            data_root=str(tmp_root(tiny_multitask_data_root)),
        )


def tmp_root(root):
    # NCBI-disease files in the multi-task root: the error must be about heads, not files.
    from tests.conftest import make_tiny_dataset

    if not get_dataset("NCBI-disease", root).directory.is_dir():
        make_tiny_dataset(root, "NCBI-disease", sizes=(10, 10, 10))
    return root


def test_catalog_lists_heads(tiny_multitask_bundle, monkeypatch, tmp_path):
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"all-mini": {"path": str(tiny_multitask_bundle)}}))
    monkeypatch.setenv("OPENMED_RAY_CATALOG", str(catalog))
    (row,) = [r for r in list_adapters() if r["name"] == "all-mini"]
    assert row["task"] == "ner-multi" and row["heads"] == ["chemical", "disease"]
    assert row["entity_types"] == ["Chemical", "Disease"]
    # Entities of a catalog name carry it: all-mini:chemical, all-mini:disease.
    results = Annotator(["all-mini"], threads=1).annotate(TEXTS)
    assert {e.adapter for r in results for e in r.entities} == {
        "all-mini:chemical",
        "all-mini:disease",
    }
