"""Starting a training run from a trained bundle's weights (a warm start).

A run given `init_from` builds its model as usual, then copies the bundle's trained weights
into it (LoRA or the whole encoder, and the head or heads) and trains on with a fresh
optimizer and schedule: training continued in a later session (checkpoints under `runs/` do
not outlive a machine), or a related task started from a shipped bundle. The bundle must fit
the model the run builds; any difference that would leave weights unused or mis-shaped is
refused before any work, naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openmed_ray.config import LoraConfig
from openmed_ray.models.bundle import (
    ENCODER_DIR,
    LORA_FILES,
    MULTITASK,
    BundleError,
    is_bundle,
    load_head,
    read_card,
    read_heads,
)
from openmed_ray.models.classifier import (
    EncoderWithHead,
    MultiTaskTokenClassifier,
    TokenClassifier,
    load_encoder,
)

SINGLE_TASK = "ner"  # how a single-type card's task reads (its card has none)


def require_same(directory: Path, fields: dict[str, tuple[Any, Any]]) -> None:
    """Each field as (the bundle's value, the run's value); a BundleError for the first that
    differs."""
    for field, (theirs, ours) in fields.items():
        if theirs != ours:
            raise BundleError(
                f"cannot start from {directory}: its {field} is {theirs!r} but this run's is "
                f"{ours!r}; set {field} to match or start from scratch"
            )


def encoder_fields(
    card: dict[str, Any], *, backbone: str, method: str, lora: LoraConfig
) -> dict[str, tuple[Any, Any]]:
    """What the encoder's weights depend on: backbone, method and, for LoRA, its shape."""
    fields = {"backbone": (card.get("backbone"), backbone), "method": (card.get("method"), method)}
    if method == "lora":
        trained = card.get("hyperparameters", {}).get("lora", {})
        fields["lora.rank"] = (trained.get("rank"), lora.rank)
        fields["lora.alpha"] = (trained.get("alpha"), lora.alpha)
        fields["lora.targets"] = (list(trained.get("targets", [])), list(lora.targets))
    return fields


def init_from_record(bundle: str, card: dict[str, Any]) -> dict[str, Any]:
    """What a card records of the bundle its run started from."""
    return {"bundle": bundle, "version": card["version"], "dev_f1": card["metrics"]["dev"]["f1"]}


def load_encoder_weights(model: EncoderWithHead, directory: Path) -> None:
    """Copy a bundle's trained encoder weights (its LoRA, or the whole encoder) into a freshly
    built model whose LoRA is not merged."""
    if model.is_lora:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = {k: v.float() for k, v in load_file(str(directory / LORA_FILES[1])).items()}
        result = set_peft_model_state_dict(model.encoder, weights)
        missing = [key for key in result.missing_keys if "lora_" in key]
        if missing or result.unexpected_keys:
            raise BundleError(
                f"{directory}: LoRA weights do not fit the model (missing {missing[:3]}, "
                f"unexpected {list(result.unexpected_keys)[:3]})"
            )
    else:
        model.encoder.load_state_dict(load_encoder(directory / ENCODER_DIR).state_dict())


def check_ner_warm_start(
    directory: Path,
    *,
    backbone: str,
    method: str,
    lora: LoraConfig,
    head_labels: dict[str, list[str]],
    multitask: bool,
) -> dict[str, Any]:
    """The card of the NER bundle a fine-tuning run starts from, after checking that its
    weights fit the model the run builds: the same encoder, and the same heads with the same
    labels (a single-type bundle: the same labels). Else a BundleError naming the field."""
    card = read_card(directory) if is_bundle(directory) else {}
    task = card.get("task", SINGLE_TASK)
    if not card or task not in (SINGLE_TASK, MULTITASK):
        raise BundleError(
            f"{directory} is not an NER adapter bundle with a card: a fine-tuning run starts "
            "from a bundle that `openmed-ray finetune` wrote"
        )
    require_same(directory, {"task": (task, MULTITASK if multitask else SINGLE_TASK)})
    fields = encoder_fields(card, backbone=backbone, method=method, lora=lora)
    heads = read_heads(directory, card)
    if multitask:
        fields["heads"] = (heads, head_labels)
    else:
        fields["labels"] = (next(iter(heads.values())), next(iter(head_labels.values())))
    require_same(directory, fields)
    return card


def load_ner_warm_start(model: TokenClassifier | MultiTaskTokenClassifier, directory: Path) -> None:
    """Copy a checked NER bundle's encoder and head weights into a freshly built model."""
    load_encoder_weights(model, directory)
    heads = model.heads if isinstance(model, MultiTaskTokenClassifier) else model.classifier
    heads.load_state_dict(load_head(directory))
