"""Relation classifier training on Ray Train: learns the synthetic rule, bundle, resume."""

import json

import pytest

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
