"""A tiny real sweep shared by the HPO tests (sweeps cost tens of seconds each)."""

import pytest

from openmed_ray.config import SweepConfig
from openmed_ray.hpo.sweep import run_sweep
from tests.conftest import make_tiny_dataset


def sweep_config(backbone, data_root, output, **overrides) -> SweepConfig:
    values = dict(
        finetune=dict(
            dataset="NCBI-disease",
            backbone=str(backbone),
            data_root=str(data_root),
            method="lora",
            lora={"targets": ["all-linear"], "dropout": 0.0},
            epochs=3,
            patience=3,
            eval_batch_size=64,
            max_train_sentences=800,  # the whole tiny set: the final run must lift the cap
        ),
        # Every point learns something by epoch 1 (on 800 sentences; measured 0.42-0.73 dev F1
        # over 3e-3..3e-2), but they differ, so ASHA's rung cutoffs are above zero and cut.
        # Ray's ASHA never stops a trial on a tie, so an all-zero rung would prune nothing.
        space=dict(learning_rate=[1e-3, 3e-2], lora_rank=[4, 8], batch_size=[16, 32]),
        output=str(output),
        trials=4,
        concurrency=2,
        cpus_per_trial=1,
        grace_period=1,
        reduction_factor=2,
        seed=0,
        final_epochs=2,
    )
    values.update(overrides)
    return SweepConfig.from_dict(values)


@pytest.fixture(scope="package")
def sweep_data_root(tmp_path_factory):
    """Enough training sentences that LoRA on the tiny BERT learns within the first epoch."""
    return make_tiny_dataset(tmp_path_factory.mktemp("sweep-data"), sizes=(800, 40, 40))


@pytest.fixture(scope="package")
def sweep(ray_local, tiny_backbone, sweep_data_root, tmp_path_factory):
    output = tmp_path_factory.mktemp("sweep")
    return output, run_sweep(sweep_config(tiny_backbone, sweep_data_root, output))
