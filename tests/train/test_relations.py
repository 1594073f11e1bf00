"""Relation classifier training on Ray Train: learns the synthetic rule, bundle, resume."""

import json

import pytest
import torch

from openmed_ray.errors import ConfigError
from openmed_ray.eval.relations import relation_prf
from openmed_ray.models.relation import load_relation_bundle
from openmed_ray.relations.datasets import UnknownRelationDatasetError, relation_dataset
from openmed_ray.relations.examples import CID_TASK, RelationDataError, gold_triples
from openmed_ray.train.relations import evaluate_relation_split, train_relations
from tests.conftest import make_tiny_relation_corpus, tiny_relation_config

pytestmark = pytest.mark.slow


def cooccurrence_f1(data_root) -> float:
    """Every pair of a document predicted: the classic baseline the model must beat."""
    documents = relation_dataset("BC5CDR-CID", data_root).load("test")
    predicted = {(d.doc_id, h, t, "CID") for d in documents for h, t in d.candidate_pairs(CID_TASK)}
    return relation_prf(predicted, gold_triples(documents)).f1


def test_ray_train_learns_relations_writes_a_bundle_and_resumes(
    ray_local, tiny_backbone, tiny_relation_data_root, tmp_path
):
    output = tmp_path / "run"
    config = tiny_relation_config(tiny_backbone, tiny_relation_data_root, output, epochs=6)
    result = train_relations(config, name="cid-test")
    card = result.card
    assert card["task"] == "relation" and card["relation_task"] == CID_TASK.to_dict()
    assert [h["epoch"] for h in card["history"]] == list(range(1, 7))
    baseline = cooccurrence_f1(tiny_relation_data_root)
    assert card["metrics"]["test"]["f1"] > baseline + 0.2, (card["metrics"], baseline)
    # The test split is scored at the threshold chosen on dev.
    assert card["metrics"]["test"]["threshold"] == card["metrics"]["dev"]["threshold"]
    assert json.loads((output / "relations.json").read_text())["version"] == card["version"]

    # The bundle reloads into the same test scores.
    bundle = load_relation_bundle(result.bundle)
    assert bundle.version == card["version"] and bundle.threshold == card["threshold"]
    scored, gold = evaluate_relation_split(bundle.model, bundle.tokenizer, config, "test")
    again = relation_prf([t for t, s in scored if s >= card["threshold"]], gold)
    assert round(again.f1, 4) == card["metrics"]["test"]["f1"]

    # Resuming a finished run trains no further epoch and gives the same bundle.
    resumed = train_relations(config.replace(resume=True), name="cid-test")
    assert len(resumed.card["history"]) == 6 and resumed.card["version"] == card["version"]
    # Without --resume the run directory is not silently reused.
    with pytest.raises(Exception, match="--resume"):
        train_relations(config)


def test_bad_relation_inputs_fail_before_training(tiny_backbone, tmp_path):
    with pytest.raises(UnknownRelationDatasetError, match="known: BC5CDR-CID"):
        relation_dataset("CHEMPROT")
    with pytest.raises(ConfigError, match="batch_size"):
        tiny_relation_config(tiny_backbone, tmp_path, tmp_path / "out", batch_size=0)
    empty = make_tiny_relation_corpus(tmp_path / "data", sizes=(4, 4, 4))
    train = empty / "normalization" / "BC5CDR" / "CDR_TrainingSet.PubTator.txt"
    train.write_text(
        "\n".join(line for line in train.read_text().splitlines() if "\tCID\t" not in line)
    )
    config = tiny_relation_config(tiny_backbone, empty, tmp_path / "out")
    with pytest.raises(RelationDataError, match="training split has no gold relations"):
        train_relations(config)
    with pytest.raises(FileNotFoundError, match="BC5CDR-CID train file not found"):
        train_relations(tiny_relation_config(tiny_backbone, tmp_path / "nowhere", tmp_path / "o"))


def test_a_float16_bundle_stores_half_weights_and_reloads_to_its_card_scores(
    tiny_backbone, tiny_relation_data_root, tmp_path
):
    from safetensors import safe_open

    from openmed_ray.train.relations import train_relations_local

    config = tiny_relation_config(
        tiny_backbone, tiny_relation_data_root, tmp_path / "run", epochs=4, save_dtype="float16"
    )
    result = train_relations_local(config, name="cid-half")
    assert result.card["save_dtype"] == "float16"
    weights = sorted(result.bundle.rglob("*.safetensors"))
    assert {p.name for p in weights} >= {"head.safetensors", "model.safetensors"}
    for path in weights:
        with safe_open(str(path), "pt") as stored:
            names = stored.keys()  # safe_open is not iterable
            dtypes = {stored.get_tensor(name).dtype for name in names}
        assert dtypes <= {torch.float16, torch.int64}, (path, dtypes)

    bundle = load_relation_bundle(result.bundle)
    assert {p.dtype for p in bundle.model.parameters()} == {torch.float32}
    scored, gold = evaluate_relation_split(bundle.model, bundle.tokenizer, config, "test")
    again = relation_prf([t for t, s in scored if s >= bundle.threshold], gold)
    # The card was scored in float32 before saving. Rounding to float16 can move a pair that
    # scores right at the threshold (one of 25 gold pairs flipped in a CI run), not more.
    assert abs(again.f1 - result.card["metrics"]["test"]["f1"]) <= 0.05
    assert result.card["metrics"]["test"]["f1"] > 0.5


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_run_started_from_a_bundle_begins_at_its_weights(
    method, tiny_backbone, tiny_relation_bundle, tiny_relation_data_root, tmp_path
):
    from openmed_ray.models.bundle import read_card
    from openmed_ray.train.relations import train_relations_local

    def config(output, **changes):
        return tiny_relation_config(
            tiny_backbone, tiny_relation_data_root, tmp_path / output, method=method, **changes
        )

    start = (
        tiny_relation_bundle
        if method == "full"
        else train_relations_local(config("lora-start", epochs=3), name="start").bundle
    )
    started = read_card(start)
    # One epoch at a negligible learning rate: the run's model is the bundle's, so it scores
    # dev and test exactly as the bundle did (a fresh model scores near chance here).
    card = train_relations_local(
        config(
            "warm", init_from=str(start), epochs=1, learning_rate=1e-12, head_learning_rate=1e-12
        ),
        name="warm",
    ).card
    assert card["init_from"] == {
        "bundle": str(start),
        "version": started["version"],
        "dev_f1": started["metrics"]["dev"]["f1"],
    }
    assert card["metrics"] == started["metrics"]


def test_a_bundle_the_run_cannot_start_from_is_refused_before_training(
    tiny_backbone, tiny_relation_bundle, tiny_bundle, tiny_relation_data_root, tmp_path
):
    from openmed_ray.models.bundle import BundleError

    def refused(match, **changes):
        config = tiny_relation_config(
            tiny_backbone, tiny_relation_data_root, tmp_path / "out", **changes
        )
        with pytest.raises(BundleError, match=match):
            train_relations(config)

    start = str(tiny_relation_bundle)
    refused(
        "pair_scoring is 'mention-pairs' but this run's is 'entities'",
        init_from=start,
        pair_scoring="entities",
    )
    refused("method is 'full' but this run's is 'lora'", init_from=start, method="lora")
    refused("is not a relation bundle", init_from=str(tiny_bundle))
    assert not (tmp_path / "out").exists()  # refused before the run wrote anything
