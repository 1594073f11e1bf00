"""The search space: SearchSpaceConfig as Ray Tune domains, a sample as a FinetuneConfig, and
the final training of the chosen sample."""

from __future__ import annotations

from typing import Any

from openmed_ray.config import FinetuneConfig, SearchSpaceConfig, SweepConfig


def tune_param_space(space: SearchSpaceConfig, method: str) -> dict[str, Any]:
    """Tune domains for every searched knob; a fixed value (low == high, one choice) stays a
    constant, which OptunaSearch passes through without sampling."""
    from ray import tune

    def continuous(domain, bounds: tuple[float, float]):
        low, high = bounds
        return low if low == high else domain(low, high)

    def categorical(choices: tuple[int, ...]):
        return choices[0] if len(choices) == 1 else tune.choice(list(choices))

    params: dict[str, Any] = {
        "learning_rate": continuous(tune.loguniform, space.learning_rate_range(method)),
        "batch_size": categorical(space.batch_size),
        "weight_decay": continuous(tune.uniform, space.weight_decay),
        "warmup_ratio": continuous(tune.uniform, space.warmup_ratio),
    }
    if method == "lora":
        params["lora_rank"] = categorical(space.lora_rank)
        params["lora_dropout"] = continuous(tune.uniform, space.lora_dropout)
    return params


def trial_config(base: FinetuneConfig, params: dict[str, Any]) -> FinetuneConfig:
    """The fine-tuning config of one sampled point (LoRA alpha follows as 2 x rank)."""
    lora = base.lora
    if "lora_rank" in params:
        rank = int(params["lora_rank"])
        lora = lora.replace(rank=rank, alpha=2 * rank)
    if "lora_dropout" in params:
        lora = lora.replace(dropout=float(params["lora_dropout"]))
    return base.replace(
        learning_rate=float(params["learning_rate"]),
        batch_size=int(params["batch_size"]),
        weight_decay=float(params["weight_decay"]),
        warmup_ratio=float(params["warmup_ratio"]),
        lora=lora,
    )


def final_config(config: SweepConfig, params: dict[str, Any], output: str) -> FinetuneConfig:
    """The final training of the chosen point: the trials' shared settings with `params`, on
    the full training set (or `final_train_sentences`) for `final_epochs`, the sweep's seed."""
    return trial_config(config.finetune, params).replace(
        output=output,
        seed=config.seed,
        epochs=config.final_epochs or config.finetune.epochs,
        max_train_sentences=config.final_train_sentences,
    )
