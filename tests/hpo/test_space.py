"""The search space: validation, Tune domains, and a sampled point as a fine-tuning config."""

import pytest

from openmed_ray.config import FinetuneConfig, SearchSpaceConfig, SweepConfig
from openmed_ray.errors import ConfigError
from openmed_ray.hpo.space import final_config, trial_config, tune_param_space


def test_default_space_is_the_papers():
    from ray.tune.search.sample import Categorical, Float

    lora = tune_param_space(SearchSpaceConfig(), "lora")
    assert set(lora) == {
        "learning_rate",
        "batch_size",
        "weight_decay",
        "warmup_ratio",
        "lora_rank",
        "lora_dropout",
    }
    assert isinstance(lora["learning_rate"], Float)
    assert (lora["learning_rate"].lower, lora["learning_rate"].upper) == (1e-4, 3e-3)
    assert lora["batch_size"].categories == [16, 32]
    assert lora["lora_rank"].categories == [8, 16, 32]
    assert isinstance(lora["lora_rank"], Categorical)
    # Full fine-tuning searches a lower learning rate and has no LoRA knobs.
    full = tune_param_space(SearchSpaceConfig(), "full")
    assert "lora_rank" not in full and full["learning_rate"].upper == 2e-4


def test_fixed_values_stay_constants():
    space = SearchSpaceConfig(batch_size=(32,), weight_decay=(0.01, 0.01))
    params = tune_param_space(space, "lora")
    assert params["batch_size"] == 32
    assert params["weight_decay"] == 0.01


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("learning_rate", (1e-3, 1e-4), "contradictory"),
        ("learning_rate", (0.0, 1e-3), ">= 1e-12"),
        ("batch_size", (), "empty search space"),
        ("lora_rank", (8, 8), "repeated"),
        ("warmup_ratio", (0.0, 1.5), "< 1.0"),
        ("weight_decay", (0.1,), r"\[low, high\]"),
    ],
)
def test_bad_spaces_name_the_field(field, value, message):
    with pytest.raises(ConfigError, match=rf"space\.{field}.*{message}"):
        SearchSpaceConfig(**{field: value})


def test_sweep_config_from_yaml(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "finetune:\n  dataset: BC2GM\n  epochs: 4\n  lora: {targets: [all-linear]}\n"
        "space:\n  learning_rate: [1.0e-4, 1.0e-3]\n  lora_rank: [16]\n"
        "trials: 8\nconcurrency: 2\n"
    )
    config = SweepConfig.from_yaml(path)
    assert config.finetune.dataset == "BC2GM" and config.finetune.lora.targets == ("all-linear",)
    assert config.space.learning_rate == (1e-4, 1e-3) and config.trials == 8
    with pytest.raises(ConfigError, match="grace_period"):
        SweepConfig(finetune=FinetuneConfig(epochs=2), grace_period=3)


def test_trial_config_applies_a_sample():
    base = FinetuneConfig(lora={"targets": ["all-linear"], "dropout": 0.05})
    sample = {
        "learning_rate": 2e-3,
        "batch_size": 16,
        "weight_decay": 0.05,
        "warmup_ratio": 0.15,
        "lora_rank": 8,
        "lora_dropout": 0.02,
    }
    config = trial_config(base, sample)
    assert (config.learning_rate, config.batch_size) == (2e-3, 16)
    assert (config.weight_decay, config.warmup_ratio) == (0.05, 0.15)
    assert (config.lora.rank, config.lora.alpha, config.lora.dropout) == (8, 16, 0.02)
    assert config.lora.targets == ("all-linear",)  # what is not searched is kept


def test_the_final_training_lifts_the_trials_cap_and_takes_its_own_epochs():
    sweep = SweepConfig(
        finetune=FinetuneConfig(epochs=3, max_train_sentences=2000, save_dtype="float16"),
        final_epochs=12,
        seed=7,
    )
    sample = {"learning_rate": 7e-4, "batch_size": 16, "weight_decay": 0.0, "warmup_ratio": 0.1}
    config = final_config(sweep, {**sample, "lora_rank": 32}, "runs/final")
    assert (config.max_train_sentences, config.epochs, config.seed) == (None, 12, 7)
    assert (config.learning_rate, config.lora.rank, config.output) == (7e-4, 32, "runs/final")
    assert config.save_dtype == "float16"
    capped = final_config(sweep.replace(final_epochs=None, final_train_sentences=500), sample, "x")
    assert (capped.max_train_sentences, capped.epochs) == (500, 3)
    with pytest.raises(ConfigError, match="final_epochs: must be > 0"):
        SweepConfig(final_epochs=0)
