"""Fine-tuning on Ray Train: pre-flight checks, TorchTrainer, then the adapter bundle.

OUTPUT/adapter/        the adapter bundle (best dev epoch; multi-type with several datasets)
OUTPUT/ray/finetune/   Ray Train run: checkpoints used by --resume
OUTPUT/finetune.json   config, per-epoch history, dev and test metrics
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from openmed_ray.config import FinetuneConfig
from openmed_ray.io.filesystem import write_bytes_atomic
from openmed_ray.models.backbones import load_tokenizer, resolve_backbone
from openmed_ray.models.bundle import MULTITASK, save_bundle
from openmed_ray.models.catalog import resolve_adapter
from openmed_ray.models.classifier import HeadView
from openmed_ray.models.warm_start import check_ner_warm_start, init_from_record
from openmed_ray.text.windows import WindowSpec
from openmed_ray.train.common import (
    run_card_fields,
    train_in_process,
    train_on_ray,
)
from openmed_ray.train.evaluate import compare_decodings
from openmed_ray.train.loop import (
    check_tasks,
    load_best_model,
    ray_train_loop_per_worker,
)

log = logging.getLogger(__name__)

RUN_NAME = "finetune"


@dataclass
class FinetuneResult:
    output: Path
    bundle: Path
    card: dict[str, Any]


def method_label(config: FinetuneConfig) -> str:
    if config.method == "full":
        return "full fine-tuning"
    targets = (
        "q/v" if tuple(config.lora.targets) == ("query", "value") else ",".join(config.lora.targets)
    )
    return f"{targets} LoRA r{config.lora.rank}"


def preflight(config: FinetuneConfig) -> tuple[dict[str, list[str]], dict[str, Any] | None]:
    """Fail before any Ray work: datasets, labels, backbone, tokenizer, and the bundle the run
    starts from. Returns the head labels and the card's `init_from` record (or None)."""
    head_labels = check_tasks(config)
    load_tokenizer(resolve_backbone(config.backbone))
    if not config.init_from:
        return head_labels, None
    start = check_ner_warm_start(
        resolve_adapter(config.init_from),
        backbone=config.backbone,
        method=config.method,
        lora=config.lora,
        head_labels=head_labels,
        multitask=config.multitask,
    )
    return head_labels, init_from_record(config.init_from, start)


def finetune(config: FinetuneConfig, name: str | None = None) -> FinetuneResult:
    """Train with Ray Train, keep the best dev epoch, evaluate dev and test once, write a bundle."""
    head_labels, init_from = preflight(config)
    output, model, state, wall_seconds = train_on_ray(
        ray_train_loop_per_worker,
        config,
        RUN_NAME,
        lambda checkpoint: load_best_model(config, checkpoint, head_labels),
    )
    return write_outputs(config, name, output, model, head_labels, state, wall_seconds, init_from)


def finetune_local(config: FinetuneConfig, name: str | None = None) -> FinetuneResult:
    """The same loop and outputs in this process, without Ray (notebooks, tests, debugging)."""
    from openmed_ray.train.loop import run_finetune_loop

    head_labels, init_from = preflight(config)
    output, model, state, wall_seconds = train_in_process(
        run_finetune_loop,
        config,
        lambda checkpoint: load_best_model(config, checkpoint, head_labels),
    )
    return write_outputs(config, name, output, model, head_labels, state, wall_seconds, init_from)


def evaluate_splits(
    model, tokenizer, labels: list[str], dataset, config: FinetuneConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(dev and test metrics, the Viterbi-vs-argmax comparison) of one head on its dataset."""
    spec = WindowSpec(config.max_length, config.overlap)
    metrics: dict[str, Any] = {}
    decoding_comparison = {}
    for split, key in (("devel", "dev"), ("test", "test")):
        # One forward pass, decoded both ways: the configured decoding gives the metrics,
        # and the other is recorded beside it (the Viterbi-vs-argmax measurement).
        compared = compare_decodings(
            model,
            tokenizer,
            labels,
            dataset.load(split),
            spec=spec,
            batch_size=config.eval_batch_size,
        )
        reports = compared.pop("reports")
        metrics[key] = reports[config.decoding].to_dict()
        decoding_comparison[key] = {
            **{method: _prf(report) for method, report in reports.items()},
            **compared,
        }
    return metrics, decoding_comparison


def write_outputs(
    config: FinetuneConfig,
    name: str | None,
    output: Path,
    model,
    head_labels: dict[str, list[str]],
    state: dict[str, Any],
    wall_seconds: float,
    init_from: dict[str, Any] | None = None,
) -> FinetuneResult:
    """Evaluate the best model on dev and test once, then write the bundle and finetune.json."""
    from openmed_ray.datasets import require_dataset

    tokenizer = load_tokenizer(resolve_backbone(config.backbone))
    datasets = [require_dataset(d, config.data_root) for d in config.task_datasets]
    common = {
        "method": config.method,
        "method_label": method_label(config),
        "decoding": config.decoding,
    }
    if config.multitask:
        heads, metrics = [], {}
        for (head, labels), dataset in zip(head_labels.items(), datasets, strict=True):
            head_metrics, comparison = evaluate_splits(
                HeadView(model, head), tokenizer, labels, dataset, config
            )
            heads.append(
                {
                    "name": head,
                    "dataset": dataset.name,
                    "entity_types": entity_types(labels),
                    "labels": labels,
                    "metrics": head_metrics,
                    "decoding_comparison": comparison,
                    "data_files": data_files(dataset),
                }
            )
        for split in ("dev", "test"):
            metrics[split] = {
                key: float(np.mean([h["metrics"][split][key] for h in heads]))
                for key in ("precision", "recall", "f1")
            } | {"by_head": {h["name"]: h["metrics"][split]["f1"] for h in heads}}
        card = {
            "name": name or "multi-type",
            "task": MULTITASK,
            "dataset": "+".join(d.name for d in datasets),
            "entity_types": sorted({t for h in heads for t in h["entity_types"]}),
            "heads": heads,
            "sampling": config.sampling,
            **common,
            "metrics": metrics,
            **run_card_fields(config, state, wall_seconds, model),
        }
        labels_out: list[str] | dict[str, list[str]] = head_labels
    else:
        (labels,) = head_labels.values()
        (dataset,) = datasets
        metrics, comparison = evaluate_splits(model, tokenizer, labels, dataset, config)
        card = {
            "name": name or dataset.name.lower(),
            "dataset": dataset.name,
            "entity_types": entity_types(labels),
            "labels": labels,
            **common,
            "metrics": metrics,
            "decoding_comparison": comparison,
            **run_card_fields(config, state, wall_seconds, model),
            "data_files": data_files(dataset),
        }
        labels_out = labels
    if init_from:
        card["init_from"] = init_from
    bundle_dir = output / "adapter"
    card = save_bundle(
        model,
        labels_out,
        card,
        bundle_dir,
        backbone_spec=config.backbone,
        save_dtype=config.save_dtype,
    )
    summary = {"config": config.to_dict(), "bundle": str(bundle_dir), **card}
    write_bytes_atomic(json.dumps(summary, indent=2).encode(), output / "finetune.json")
    log.info(
        "%s: dev F1 %.4f, test F1 %.4f, bundle %s",
        card["dataset"],
        metrics["dev"]["f1"],
        metrics["test"]["f1"],
        bundle_dir,
    )
    return FinetuneResult(output, bundle_dir, card)


def entity_types(labels: list[str]) -> list[str]:
    return sorted({label[2:] for label in labels if label != "O"})


def data_files(dataset) -> dict[str, str]:
    return {split: dataset.file_sha256(split) for split in ("train", "devel", "test")}


def _prf(report) -> dict[str, float]:
    return {"precision": report.precision, "recall": report.recall, "f1": report.f1}


def clear_run(output: str | Path) -> None:
    """Remove a previous run's checkpoints (used when the user asks for a fresh start)."""
    shutil.rmtree(Path(output) / "ray" / RUN_NAME, ignore_errors=True)
