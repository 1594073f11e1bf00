"""Ray Train end to end: 2 DDP workers on local Ray, bundle round trip, resume."""

import json

import pytest
import torch

from openmed_ray.config import FinetuneConfig
from openmed_ray.datasets import get_dataset
from openmed_ray.errors import OpenMedError, ResourceError
from openmed_ray.models.bundle import load_bundle
from openmed_ray.train.data import TrainingDataError
from openmed_ray.train.evaluate import evaluate_model, predict_sentences
from openmed_ray.train.finetune import finetune
from tests.conftest import make_tiny_dataset

pytestmark = pytest.mark.slow


def ray_config(tiny_backbone, tiny_data_root, output, **overrides):
    values = dict(
        dataset="NCBI-disease",
        backbone=str(tiny_backbone),
        output=str(output),
        data_root=str(tiny_data_root),
        method="lora",
        lora={"rank": 8, "alpha": 16, "dropout": 0.0, "targets": ["all-linear"]},
        learning_rate=5e-3,
        batch_size=16,
        epochs=2,
        workers=2,
        cpus_per_worker=0.5,
        threads_per_worker=1,
    )
    values.update(overrides)
    return FinetuneConfig.from_dict(values)


def test_two_workers_train_write_a_bundle_and_resume(
    ray_local, tiny_backbone, tiny_data_root, tmp_path
):
    output = tmp_path / "run"
    result = finetune(ray_config(tiny_backbone, tiny_data_root, output))
    history = result.card["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert result.card["workers"] == 2
    assert set(result.card["metrics"]) == {"dev", "test"}
    assert json.loads((output / "finetune.json").read_text())["version"] == result.card["version"]

    # The bundle reloads into exactly the same predictions.
    bundle = load_bundle(result.bundle)
    assert bundle.card["version"] == bundle.version
    sentences = get_dataset("NCBI-disease", tiny_data_root).load("test")
    report, _ = evaluate_model(bundle.model, bundle.tokenizer, bundle.labels, sentences)
    assert report.to_dict() == result.card["metrics"]["test"]
    # Viterbi and argmax decodings of the same forward pass are both recorded, with a p-value.
    compared = result.card["decoding_comparison"]["test"]
    argmax, _ = evaluate_model(
        bundle.model, bundle.tokenizer, bundle.labels, sentences, decoding="argmax"
    )
    assert compared["argmax"]["f1"] == argmax.f1 and compared["viterbi"]["f1"] == report.f1
    assert compared["viterbi_minus_argmax_pp"] == round(100 * (report.f1 - argmax.f1), 3)
    assert 0 < compared["p_value"] <= 1
    merged = load_bundle(result.bundle, merge=True)
    assert predict_sentences(merged.model, merged.tokenizer, merged.labels, sentences) == (
        predict_sentences(bundle.model, bundle.tokenizer, bundle.labels, sentences)
    )

    # Without --resume an existing run is refused; with it, training continues at epoch 3.
    with pytest.raises(OpenMedError, match="--resume"):
        finetune(ray_config(tiny_backbone, tiny_data_root, output, epochs=3))
    resumed = finetune(ray_config(tiny_backbone, tiny_data_root, output, epochs=3, resume=True))
    assert [h["epoch"] for h in resumed.card["history"]] == [1, 2, 3]
    assert resumed.card["history"][:2] == history


def test_bad_inputs_fail_before_training(ray_local, tiny_backbone, tiny_data_root, tmp_path):
    with pytest.raises(ResourceError, match="GPU"):
        finetune(ray_config(tiny_backbone, tiny_data_root, tmp_path / "a", gpus_per_worker=1))
    unseen = make_tiny_dataset(tmp_path / "unseen")
    test_file = unseen / "bioner" / "NCBI-disease" / "test.tsv"
    test_file.write_text(test_file.read_text().replace("B-Disease", "B-Gene", 1))
    with pytest.raises(TrainingDataError, match=r"test has label\(s\) \['B-Gene'\]"):
        finetune(ray_config(tiny_backbone, unseen, tmp_path / "b"))
    empty = make_tiny_dataset(tmp_path / "empty")
    (empty / "bioner" / "NCBI-disease" / "train.tsv").write_text("")
    with pytest.raises(TrainingDataError, match="training split has no sentences"):
        finetune(ray_config(tiny_backbone, empty, tmp_path / "c"))
    assert not torch.cuda.is_available()
