"""Adapter bundles: one self-describing directory per trained model.

    adapter_config.json, adapter_model.safetensors   LoRA on the encoder (standard PEFT;
                                                      PeftModel.from_pretrained loads it)
    encoder/                                          full fine-tuning instead: the whole encoder
    head.safetensors                                  the linear token-classification head
    labels.json                                       BIO labels in head order
    card.json, README.md                              provenance and metrics

A multi-type bundle (card `task: ner-multi`) has one head per training dataset: head.safetensors
holds `heads.<name>.*`, labels.json maps each head name to its labels, and the card lists the
heads (name, dataset, entity types, labels) with per-head metrics.

The bundle's version is a content hash of its weights and labels, so the `adapter_version`
of an annotation names exactly the weights that produced it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from openmed_ray.errors import OpenMedError
from openmed_ray.io.filesystem import write_bytes_atomic
from openmed_ray.models.backbones import load_tokenizer, resolve_backbone
from openmed_ray.models.classifier import (
    MultiTaskTokenClassifier,
    TokenClassifier,
    load_encoder,
)

HEAD_FILE = "head.safetensors"
LABELS_FILE = "labels.json"
CARD_FILE = "card.json"
LORA_FILES = ("adapter_config.json", "adapter_model.safetensors")
ENCODER_DIR = "encoder"
MULTITASK = "ner-multi"  # the card's task for a multi-type bundle


class BundleError(OpenMedError):
    """A directory that is not a valid adapter bundle."""


@dataclass
class Bundle:
    path: Path
    model: TokenClassifier | MultiTaskTokenClassifier
    tokenizer: Any
    heads: dict[str, list[str]]  # head name -> BIO labels; one head (the bundle) unless multi
    card: dict[str, Any]
    version: str

    @property
    def name(self) -> str:
        return self.card.get("name") or self.path.name

    @property
    def is_multitask(self) -> bool:
        return isinstance(self.model, MultiTaskTokenClassifier)

    @property
    def labels(self) -> list[str]:
        """The labels of a single-type bundle (a multi-type bundle: `heads`, or `head_for`)."""
        if self.is_multitask:
            raise BundleError(
                f"{self.path} is a multi-type bundle with heads {list(self.heads)}; choose a "
                "head (e.g. by dataset) instead of asking for its labels"
            )
        return next(iter(self.heads.values()))

    @property
    def entity_types(self) -> list[str]:
        return sorted({lab[2:] for labels in self.heads.values() for lab in labels if lab != "O"})

    def head_for(self, dataset: str) -> str | None:
        """The head trained on `dataset` (multi-type bundles), or None."""
        for head in self.card.get("heads", []):
            if head.get("dataset", "").lower() == dataset.lower():
                return head["name"]
        return None


def _cast_file(path: Path, dtype: torch.dtype) -> None:
    tensors = load_file(str(path))
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def _canonical_json(adapter_config: dict[str, Any]) -> str:
    """PEFT writes `target_modules` (a set) in hash-seed order; sorted, the same weights
    always give the same file and so the same bundle version."""
    modules = adapter_config.get("target_modules")
    if isinstance(modules, list):
        adapter_config = {**adapter_config, "target_modules": sorted(modules)}
    return json.dumps(adapter_config, indent=2, sort_keys=True)


def save_bundle(
    model: TokenClassifier | MultiTaskTokenClassifier,
    labels: list[str] | dict[str, list[str]],
    card: dict[str, Any],
    directory: str | Path,
    *,
    backbone_spec: str,
    save_dtype: str = "float32",
    labels_scheme: str = "IOB2",
) -> dict[str, Any]:
    """Write a bundle atomically (into a temporary sibling, then renamed); returns the card it
    wrote (the given card plus `version`, `backbone` and `save_dtype`).

    `labels` is the head's label list, or for a multi-task model a head name -> labels map."""
    directory = Path(directory)
    staging = directory.with_name(f".{directory.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    dtype = torch.float16 if save_dtype == "float16" else torch.float32
    if model.is_lora:
        model.encoder.save_pretrained(str(staging))
        config_path = staging / "adapter_config.json"
        adapter_config = json.loads(config_path.read_text())
        adapter_config["base_model_name_or_path"] = backbone_spec  # not this machine's path
        config_path.write_text(_canonical_json(adapter_config))
        weights = [staging / "adapter_model.safetensors"]
    else:
        model.encoder.save_pretrained(str(staging / ENCODER_DIR))
        weights = sorted((staging / ENCODER_DIR).glob("*.safetensors"))
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.head_state().items()},
        str(staging / HEAD_FILE),
        metadata={"format": "pt"},
    )
    weights.append(staging / HEAD_FILE)
    if dtype != torch.float32:
        for path in weights:
            _cast_file(path, dtype)
    key = "heads" if isinstance(labels, dict) else "labels"
    (staging / LABELS_FILE).write_text(json.dumps({key: labels, "scheme": labels_scheme}, indent=2))
    version = bundle_version(staging)
    card = {**card, "version": version, "backbone": backbone_spec, "save_dtype": save_dtype}
    (staging / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=False))
    (staging / "README.md").write_text(render_card_markdown(card))
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)
    return card


def bundle_version(directory: str | Path) -> str:
    """Content hash of the weights and labels (the card's own metrics do not change it)."""
    directory = Path(directory)
    digest = hashlib.sha256()
    files = [directory / LABELS_FILE, directory / HEAD_FILE]
    files += [directory / name for name in LORA_FILES if (directory / name).is_file()]
    files += sorted((directory / ENCODER_DIR).glob("*.safetensors"))
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def is_bundle(directory: str | Path) -> bool:
    directory = Path(directory)
    return (directory / HEAD_FILE).is_file() and (directory / LABELS_FILE).is_file()


def read_card(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CARD_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def load_bundle(
    directory: str | Path, *, backbone: str | None = None, merge: bool = False
) -> Bundle:
    """Rebuild the classifier from a bundle, in eval mode on the CPU.

    `backbone` overrides the card's backbone (for a bundle trained on a backbone that lives
    elsewhere on this machine). `merge=True` folds LoRA into the encoder for fast inference.
    """
    directory = Path(directory)
    if not is_bundle(directory):
        raise BundleError(
            f"{directory} is not an adapter bundle: it needs {HEAD_FILE} and {LABELS_FILE}"
        )
    card = read_card(directory)
    if card.get("task") == "relation":
        raise BundleError(
            f"{directory} is a relation bundle ({card.get('name')}: "
            f"{card.get('relation_task', {}).get('name')}), not an NER adapter; use it with "
            "`openmed-ray kg --relations`"
        )
    heads = read_heads(directory, card)
    encoder, backbone_spec = load_bundle_encoder(directory, card, backbone)
    if card.get("task") == MULTITASK:
        model = MultiTaskTokenClassifier(encoder, {name: len(v) for name, v in heads.items()})
        model.heads.load_state_dict(load_head(directory))
    else:
        model = TokenClassifier(encoder, len(next(iter(heads.values()))))
        model.classifier.load_state_dict(load_head(directory))
    if merge:
        model.merge_lora()
    model.float().eval()
    tokenizer = load_tokenizer(resolve_backbone(backbone_spec))
    return Bundle(directory, model, tokenizer, heads, card, bundle_version(directory))


def read_labels(directory: str | Path) -> list[str]:
    return json.loads((Path(directory) / LABELS_FILE).read_text())["labels"]


def read_heads(directory: Path, card: dict[str, Any]) -> dict[str, list[str]]:
    """Head name -> labels, checked against the card (a single-type bundle has one head)."""
    stored = json.loads((directory / LABELS_FILE).read_text())
    if card.get("task") != MULTITASK:
        if "labels" not in stored:
            raise BundleError(f"{directory}/{LABELS_FILE} has no 'labels' list")
        return {card.get("name") or directory.name: stored["labels"]}
    heads = stored.get("heads")
    if not isinstance(heads, dict) or not heads:
        raise BundleError(
            f"{directory}/{LABELS_FILE}: a multi-type bundle maps each head to its labels "
            "under 'heads'"
        )
    described = {head["name"]: head.get("labels") for head in card.get("heads", [])}
    if list(described) != list(heads):
        raise BundleError(
            f"{directory}: the card's heads {list(described)} are not the heads in "
            f"{LABELS_FILE} {list(heads)}"
        )
    for name, labels in heads.items():
        if described[name] != labels:
            raise BundleError(
                f"{directory}: head {name!r} has labels {labels} in {LABELS_FILE} but "
                f"{described[name]} in the card's heads"
            )
    return heads


def load_bundle_encoder(
    directory: Path, card: dict[str, Any], backbone: str | None = None
) -> tuple[torch.nn.Module, str]:
    """(encoder with the bundle's LoRA or full weights, backbone spec) of a bundle."""
    backbone_spec = backbone or card.get("backbone")
    if not backbone_spec:
        raise BundleError(f"{directory}/{CARD_FILE} does not name its backbone; pass backbone=")
    if (directory / ENCODER_DIR).is_dir():
        return load_encoder(directory / ENCODER_DIR).float(), backbone_spec
    from peft import PeftModel

    base = load_encoder(resolve_backbone(backbone_spec))
    return PeftModel.from_pretrained(base, str(directory)), backbone_spec


def load_head(directory: Path) -> dict[str, torch.Tensor]:
    """The head's weights, without their module prefix, as float32."""
    return {k.split(".", 1)[1]: v.float() for k, v in load_file(str(directory / HEAD_FILE)).items()}


def update_card(directory: str | Path, **fields: Any) -> dict[str, Any]:
    """Add or replace card fields of a saved bundle; weights, and so the version, are untouched."""
    directory = Path(directory)
    card = {**read_card(directory), **fields}
    write_bytes_atomic(json.dumps(card, indent=2).encode(), directory / CARD_FILE)
    write_bytes_atomic(render_card_markdown(card).encode(), directory / "README.md")
    return card


def render_card_markdown(card: dict[str, Any]) -> str:
    """A human-readable model card from card.json."""
    if card.get("task") == "relation":
        return render_relation_card_markdown(card)
    if card.get("task") == MULTITASK:
        return render_multitask_card_markdown(card)
    lines = [f"# {card.get('name', 'adapter')}: {card.get('dataset', '')} NER adapter", ""]
    lines.append(
        f"- backbone: `{card.get('backbone')}`; method: {card.get('method_label', card.get('method'))}"
    )
    lines.append(f"- version: `{card.get('version')}`; labels: {', '.join(card.get('labels', []))}")
    if "trainable_parameters" in card:
        lines.append(
            f"- trainable parameters: {card['trainable_parameters']:,} of {card['total_parameters']:,}"
        )
    lines.append(
        f"- epochs: {card.get('epochs_trained')} (best dev epoch {card.get('best_epoch')}); "
        f"training seconds: {card.get('train_seconds')}"
    )
    for split in ("dev", "test"):
        metrics = card.get("metrics", {}).get(split)
        if not metrics:
            continue
        lines += [
            "",
            f"## {split} (seqeval default mode; strict IOB2 F1 {metrics['strict']['f1']:.4f})",
            "",
            "| type | precision | recall | F1 | support |",
            "|---|---:|---:|---:|---:|",
        ]
        for entity_type, score in metrics["per_type"].items():
            lines.append(
                f"| {entity_type} | {score['precision']:.4f} | {score['recall']:.4f} | "
                f"{score['f1']:.4f} | {score['support']} |"
            )
        lines.append(
            f"| **micro** | {metrics['precision']:.4f} | {metrics['recall']:.4f} | "
            f"{metrics['f1']:.4f} | {metrics['support']} |"
        )
    return "\n".join(lines + _choice_lines(card) + _card_appendix(card))


def _choice_lines(card: dict[str, Any]) -> list[str]:
    """Why this configuration was shipped (the card's `shipped_choice`), if it says."""
    choice = card.get("shipped_choice")
    if not choice:
        return []
    lines = ["", "## Configuration choice", "", f"- rule: {choice['rule']}"]
    if note := choice.get("note"):
        lines.append(f"- note: {note}")
    if candidates := choice.get("candidates"):
        lines.append(
            "- candidates (dataset: configuration): "
            + ", ".join(f"{d}: {c}" for d, c in candidates.items())
        )
    lines += [f"- dev F1, {c}: {f1:.4f}" for c, f1 in choice["dev_f1_by_config"].items()]
    lines += [
        f"- smallest dev F1 delta to the single-type adapters, {c}: {delta:+.2f} pp"
        for c, delta in choice.get("min_dev_delta_pp_by_config", {}).items()
    ]
    return lines


def _card_appendix(card: dict[str, Any]) -> list[str]:
    """The hyperparameters and provenance blocks every card ends with."""
    return [
        "",
        "## Hyperparameters",
        "",
        "```json",
        json.dumps(card.get("hyperparameters", {}), indent=2),
        "```",
        "",
        "## Provenance",
        "",
        "```json",
        json.dumps({k: card.get(k) for k in ("data_files", "versions", "created")}, indent=2),
        "```",
        "",
    ]


def render_multitask_card_markdown(card: dict[str, Any]) -> str:
    heads = card.get("heads", [])
    lines = [
        f"# {card.get('name', 'multi-type')}: one encoder, {len(heads)} NER heads",
        "",
        f"- backbone: `{card.get('backbone')}`; method: {card.get('method_label')}; "
        f"version: `{card.get('version')}`; batch sampling: {card.get('sampling')}",
        f"- epochs: {card.get('epochs_trained')} (best dev epoch {card.get('best_epoch')}, "
        f"by mean dev F1); training seconds: {card.get('train_seconds')}",
        "- request every head with the bundle's name, some with NAME:HEAD+HEAD (head names "
        "or entity types)",
        "",
        "| head | dataset | types | dev F1 | test P | test R | test F1 |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for head in heads:
        dev, test = head["metrics"]["dev"], head["metrics"]["test"]
        lines.append(
            f"| {head['name']} | {head['dataset']} | {', '.join(head['entity_types'])} | "
            f"{dev['f1']:.4f} | {test['precision']:.4f} | {test['recall']:.4f} | "
            f"{test['f1']:.4f} |"
        )
    return "\n".join(lines + _choice_lines(card) + _card_appendix(card))


def render_relation_card_markdown(card: dict[str, Any]) -> str:
    task = card.get("relation_task", {})
    lines = [
        f"# {card.get('name', 'relations')}: {card.get('dataset', '')} relation classifier",
        "",
        f"- task: {', '.join(task.get('relations', []))} from {task.get('head_type')} to "
        f"{task.get('tail_type')}; labels: {', '.join(card.get('labels', []))}",
        f"- backbone: `{card.get('backbone')}`; method: {card.get('method_label')}; "
        f"version: `{card.get('version')}`",
        f"- score threshold (chosen on dev, gold mentions): {card.get('threshold')}",
    ]
    pipeline = card.get("pipeline_threshold")
    if pipeline:  # the default of `kg --relations`
        dev_f1 = pipeline.get("dev", {}).get("f1")
        lines.append(
            f"- pipeline threshold (chosen on dev, predicted and linked mentions; the graph's "
            f"default): {pipeline['threshold']}"
            + (f", dev F1 {dev_f1:.4f}" if dev_f1 is not None else "")
        )
    lines += [
        f"- epochs: {card.get('epochs_trained')} (best dev epoch {card.get('best_epoch')}); "
        f"training seconds: {card.get('train_seconds')}",
        "",
        "## Document-level pairs (gold mentions, the card's threshold)",
        "",
        "| split | precision | recall | F1 | predicted | gold |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for split, metrics in card.get("metrics", {}).items():
        lines.append(
            f"| {split} | {metrics['precision']:.4f} | {metrics['recall']:.4f} | "
            f"{metrics['f1']:.4f} | {metrics['predicted']} | {metrics['gold']} |"
        )
    return "\n".join(lines + _card_appendix(card))


def export_transformers(bundle: Bundle, directory: str | Path) -> Path:
    """Save a bundle as a plain transformers *ForTokenClassification model (LoRA merged).

    The result loads with `AutoModelForTokenClassification` and `pipeline(...)`, so the
    adapter can be used where openmed-ray is not installed, and baselines can run on it.
    """
    from transformers import AutoConfig, AutoModelForTokenClassification

    directory = Path(directory)
    if bundle.is_multitask:
        raise BundleError(
            f"{bundle.path} is a multi-type bundle ({len(bundle.heads)} heads); a plain "
            "transformers token classifier has one head, so export single-type bundles only"
        )
    backbone_dir = resolve_backbone(bundle.card["backbone"])
    config = AutoConfig.from_pretrained(
        str(backbone_dir),
        num_labels=len(bundle.labels),
        id2label=dict(enumerate(bundle.labels)),
        label2id={label: i for i, label in enumerate(bundle.labels)},
    )
    model = AutoModelForTokenClassification.from_config(config)
    classifier = bundle.model
    classifier.merge_lora()
    missing = model.base_model.load_state_dict(classifier.encoder.state_dict(), strict=False)
    if missing.unexpected_keys or any("pooler" not in k for k in missing.missing_keys):
        raise BundleError(f"cannot map the encoder onto {type(model).__name__}: {missing}")
    model.classifier.load_state_dict(classifier.classifier.state_dict())
    model.save_pretrained(str(directory))
    tokenizer = bundle.tokenizer
    # Pipelines chunk long texts by model_max_length; never let it exceed the positions.
    tokenizer.model_max_length = min(tokenizer.model_max_length, config.max_position_embeddings)
    tokenizer.save_pretrained(str(directory))
    return directory
