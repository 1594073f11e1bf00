"""`calibrate-relations`: a relation bundle's graph threshold chosen end to end on gold
documents (annotate, link, score every pair), written into its card, refused inputs."""

import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from openmed_ray.config import RelationCalibrationConfig
from openmed_ray.errors import ConfigError
from openmed_ray.eval.relations import relation_prf
from openmed_ray.io.pubtator import read_pubtator
from openmed_ray.kg.calibrate import CalibrationError, calibrate_relations
from openmed_ray.kg.relations import PIPELINE_THRESHOLD, RelationBundleError, relation_spec
from openmed_ray.kg.store import GraphStore
from openmed_ray.models.bundle import read_card
from tests.annotate.conftest import REPO
from tests.conftest import CHEMICALS, DISEASES, RELATION_FILES

pytestmark = pytest.mark.slow
UNLINKED_CHEMICAL = CHEMICALS[0]  # left out of the dictionary: its pairs cannot be judged


@pytest.fixture
def inputs(tiny_relation_bundle, tiny_relation_data_root, tmp_path):
    """(relation bundle copy, gold dev file, dictionary): the copy's card may be rewritten."""
    bundle = shutil.copytree(tiny_relation_bundle, tmp_path / "cid")
    gold = tiny_relation_data_root / "normalization" / "BC5CDR" / RELATION_FILES["devel"]
    rows = [f"{w}\tDC{i}\tChemical" for i, w in enumerate(CHEMICALS) if w != UNLINKED_CHEMICAL]
    rows += [f"{w}\tDD{i}\tDisease" for i, w in enumerate(DISEASES)]
    dictionary = tmp_path / "dictionary.tsv"
    dictionary.write_text("\n".join(rows) + "\n")
    return bundle, gold, dictionary


def calibration(bundle, gold, dictionary, work, ner, **changes) -> RelationCalibrationConfig:
    values = dict(
        bundle=str(bundle),
        gold=str(gold),
        work=str(work),
        adapters=[str(ner)],
        precision="fp32",
        max_actors=1,
        threads_per_actor=1,
        relation_threads=1,
        linker={"builtin": False, "dictionaries": [str(dictionary)]},
    )
    values.update(changes)
    return RelationCalibrationConfig.from_dict(values)


def gold_triples(gold) -> set:
    return {
        (d.pmid, r.source_id, r.target_id, r.type) for d in read_pubtator(gold) for r in d.relations
    }


def test_the_threshold_is_the_best_f1_of_the_pipelines_scores_and_the_card_is_left_alone(
    ray_local, tiny_bundle, inputs, tmp_path
):
    bundle, gold, dictionary = inputs
    card_before = (bundle / "card.json").read_text()
    work = tmp_path / "work"
    record = calibrate_relations(
        calibration(bundle, gold, dictionary, work, tiny_bundle, write_card=False)
    )
    assert (bundle / "card.json").read_text() == card_before  # write_card=False

    store = GraphStore(work / "graph")
    rows = pq.read_table(store.current().path / "relations.parquet").to_pylist()
    linked = [r for r in rows if not r["head"].startswith("Chemical:")]
    assert len(linked) < len(rows)  # the unlinked chemical's pairs were scored, then set aside
    assert record["pairs_with_an_unlinked_entity"] == len(rows) - len(linked)
    assert record["scored_pairs"] == len(linked)

    # Brute force: F1 at every score the pipeline gave; the record holds the best of them.
    gold_set = gold_triples(gold)
    scored = [((r["doc_id"], r["head"], r["tail"], r["relation"]), r["score"]) for r in linked]
    by_threshold = {
        score: relation_prf([t for t, s in scored if s >= score], gold_set).f1
        for _, score in scored
    }
    best = max(by_threshold.values())
    assert record["dev"]["f1"] == pytest.approx(best, abs=1e-4)
    assert by_threshold[min(by_threshold, key=lambda s: abs(s - record["threshold"]))] == best
    assert record["dev"]["gold"] == len(gold_set)
    assert record["dev"]["f1"] > 0.5  # the tiny NER and relation models learned their rules
    assert record["ner_adapters"] and record["ner_precision"] == {
        name: "fp32" for name in record["ner_adapters"]
    }


def test_the_cli_writes_the_threshold_that_graphs_then_export_at(tiny_bundle, inputs, tmp_path):
    bundle, gold, dictionary = inputs
    args = [
        "--bundle", str(bundle), "--gold", str(gold), "--work", str(tmp_path / "work"),
        "--adapters", str(tiny_bundle), "--precision", "fp32", "--actors", "1",
        "--threads-per-actor", "1", "--relation-threads", "1", "--no-builtin-dictionary",
        "--dictionary", str(dictionary), "--address", "local", "--json",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "openmed_ray.cli", "calibrate-relations", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout)
    assert read_card(bundle)["pipeline_threshold"] == record
    spec = relation_spec(str(bundle))
    assert spec.threshold == record["threshold"]
    assert spec.threshold_source == PIPELINE_THRESHOLD
    assert record["linker_dictionary_splits"] == []  # --no-builtin-dictionary
    assert record["linker_dictionaries"] == [str(dictionary)]


def test_inputs_that_cannot_calibrate_are_refused_before_any_document_is_annotated(
    tiny_bundle, inputs, tmp_path
):
    bundle, gold, dictionary = inputs
    work = tmp_path / "work"

    with pytest.raises(RelationBundleError, match="is not a relation bundle"):
        calibrate_relations(calibration(tiny_bundle, gold, dictionary, work, tiny_bundle))

    no_relations = tmp_path / "no-relations.txt"
    no_relations.write_text(
        "\n".join(line for line in gold.read_text().splitlines() if "\tCID\t" not in line) + "\n"
    )
    with pytest.raises(CalibrationError, match="no CID relations between Chemical and Disease"):
        calibrate_relations(calibration(bundle, no_relations, dictionary, work, tiny_bundle))
    assert not work.exists()  # refused before the work directory was made

    work.mkdir()
    (work / "left-over").write_text("x")
    with pytest.raises(CalibrationError, match="is not empty"):
        calibrate_relations(calibration(bundle, gold, dictionary, work, tiny_bundle))

    # Linker settings keep the dictionary from train alone unless they name their splits.
    assert calibration(bundle, gold, dictionary, work, tiny_bundle).linker.builtin_splits == (
        "train",
    )
    both = calibration(
        bundle, gold, dictionary, work, tiny_bundle, linker={"builtin_splits": ["train", "dev"]}
    )
    assert both.linker.builtin_splits == ("train", "dev")
    with pytest.raises(ConfigError, match="gold"):
        calibration(bundle, "", dictionary, work, tiny_bundle)
    with pytest.raises(ConfigError, match="linker.builtin_splits"):
        calibration(bundle, gold, dictionary, work, tiny_bundle, linker={"builtin_splits": ["x"]})
