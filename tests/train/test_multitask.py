"""Multi-task fine-tuning: batch schedules, joint training (in-process and 2 DDP workers on
Ray Train), the multi-type bundle it writes, and its configuration errors."""

from collections import Counter

import numpy as np
import pytest

from openmed_ray.config import FinetuneConfig
from openmed_ray.datasets import get_dataset
from openmed_ray.errors import ConfigError
from openmed_ray.models.bundle import MULTITASK, load_bundle
from openmed_ray.models.classifier import HeadView
from openmed_ray.train.data import TrainingDataError, mixed_batch_schedule
from openmed_ray.train.evaluate import evaluate_model
from openmed_ray.train.finetune import finetune, finetune_local, preflight
from tests.conftest import MULTITASK_DATASETS, tiny_multitask_config


def shares(schedule):
    return Counter(task for task, _ in schedule)


def test_proportional_schedule_runs_every_batch_once():
    schedule = mixed_batch_schedule([7, 2, 3], "proportional", 2.0, np.random.default_rng(0))
    assert sorted(schedule) == [(0, i) for i in range(7)] + [(1, 0), (1, 1)] + [
        (2, i) for i in range(3)
    ]


def test_temperature_flattens_shares_and_keeps_the_epoch_length():
    counts = [90, 10]
    hot = shares(mixed_batch_schedule(counts, "temperature", 2.0, np.random.default_rng(0)))
    assert sum(hot.values()) == 100
    # P ~ n^(1/2): 90^0.5 / (90^0.5 + 10^0.5) = 0.75 of the steps go to the large task.
    assert hot == {0: 75, 1: 25}
    schedule = mixed_batch_schedule(counts, "temperature", 2.0, np.random.default_rng(0))
    # The small task is resampled: each of its batches runs at least twice, none is skipped.
    small = Counter(i for task, i in schedule if task == 1)
    assert set(small) == set(range(10)) and min(small.values()) >= 2


def test_round_robin_alternates_equal_shares():
    schedule = mixed_batch_schedule([5, 1], "round-robin", 2.0, np.random.default_rng(0))
    assert [task for task, _ in schedule] == [0, 1, 0, 1, 0, 1]
    assert shares(schedule) == {0: 3, 1: 3}


def test_schedule_depends_only_on_the_generator():
    def run(seed):
        return mixed_batch_schedule([6, 4], "temperature", 3.0, np.random.default_rng(seed))

    assert run(1) == run(1) and run(1) != run(2)


def test_joint_training_writes_a_multi_type_bundle(
    tiny_multitask_bundle, tiny_multitask_data_root, tiny_backbone, tmp_path
):
    bundle = load_bundle(tiny_multitask_bundle)
    assert bundle.is_multitask and bundle.card["task"] == MULTITASK
    assert list(bundle.heads) == ["chemical", "disease"]
    assert bundle.heads["chemical"] == ["O", "B-Chemical", "I-Chemical"]
    assert bundle.heads["disease"] == ["O", "B-Disease", "I-Disease"]
    assert bundle.entity_types == ["Chemical", "Disease"]
    history = bundle.card["history"]
    assert all({"dev_f1/chemical", "dev_f1/disease"} <= set(h) for h in history)
    # Model selection is on the mean of the datasets' dev F1.
    best = history[bundle.card["best_epoch"] - 1]
    assert best["dev_f1"] == pytest.approx((best["dev_f1/chemical"] + best["dev_f1/disease"]) / 2)
    for head in bundle.card["heads"]:
        test = get_dataset(head["dataset"], tiny_multitask_data_root).load("test")
        report, _ = evaluate_model(
            HeadView(bundle.model, head["name"]), bundle.tokenizer, head["labels"], test
        )
        # The card holds exactly what the reloaded bundle measures.
        assert report.to_dict() == head["metrics"]["test"]
        # One encoder learns both types as well as a model trained on that dataset alone.
        single = finetune_local(
            tiny_multitask_config(
                tiny_backbone,
                tiny_multitask_data_root,
                tmp_path / head["name"],
                datasets=(),
                dataset=head["dataset"],
            )
        )
        assert report.f1 > 0.5
        assert report.f1 >= single.card["metrics"]["test"]["f1"] - 0.02
    assert bundle.card["metrics"]["test"]["f1"] == pytest.approx(
        np.mean([h["metrics"]["test"]["f1"] for h in bundle.card["heads"]])
    )


@pytest.mark.slow
def test_two_ddp_workers_train_every_head(
    ray_local, tiny_backbone, tiny_multitask_data_root, tmp_path
):
    config = tiny_multitask_config(
        tiny_backbone,
        tiny_multitask_data_root,
        tmp_path / "run",
        method="lora",
        lora={"rank": 8, "alpha": 16, "dropout": 0.0, "targets": ["all-linear"]},
        epochs=2,
        workers=2,
        cpus_per_worker=0.5,
        sampling="round-robin",
    )
    result = finetune(config, name="ddp-multi")
    # One head per step: without find_unused_parameters DDP fails on the idle head.
    history = result.card["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert [h["name"] for h in result.card["heads"]] == ["chemical", "disease"]
    assert result.card["workers"] == 2 and result.card["sampling"] == "round-robin"
    assert load_bundle(result.bundle).is_multitask


def test_config_errors_name_the_field(tiny_multitask_data_root, tiny_backbone, tmp_path):
    with pytest.raises(ConfigError, match="datasets"):
        FinetuneConfig(datasets=("BC2GM", "BC2GM"))
    with pytest.raises(ConfigError, match="head_names"):
        FinetuneConfig(datasets=("BC2GM", "linnaeus"), head_names=("gene",))
    with pytest.raises(ConfigError, match="head_names"):
        FinetuneConfig(datasets=("BC2GM", "linnaeus"), head_names=("gene", "a:b"))
    with pytest.raises(ConfigError, match="sampling"):
        FinetuneConfig(datasets=("BC2GM", "linnaeus"), sampling="uniform")
    # linnaeus and s800 are both `species` in the catalog: the heads need names.
    clash = FinetuneConfig(datasets=("linnaeus", "s800"), data_root=str(tiny_multitask_data_root))
    with pytest.raises(TrainingDataError, match="head_names"):
        preflight(clash)
    missing = tiny_multitask_config(
        tiny_backbone, tiny_multitask_data_root, tmp_path, datasets=(*MULTITASK_DATASETS, "BC2GM")
    )
    with pytest.raises(Exception, match="BC2GM"):
        preflight(missing)
