"""Fine-tuning on Ray Train: pre-flight checks, TorchTrainer, then the adapter bundle.

OUTPUT/adapter/        the adapter bundle (best dev epoch)
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

from openmed_ray.config import FinetuneConfig
from openmed_ray.io.filesystem import write_bytes_atomic
from openmed_ray.models.backbones import load_tokenizer, resolve_backbone
from openmed_ray.models.bundle import save_bundle
from openmed_ray.text.windows import WindowSpec
from openmed_ray.train.common import (
    run_card_fields,
    train_in_process,
    train_on_ray,
)
from openmed_ray.train.data import check_splits
from openmed_ray.train.evaluate import compare_decodings
from openmed_ray.train.loop import (
    load_best_model,
    load_splits,
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


def preflight(config: FinetuneConfig) -> list[str]:
    """Fail before any Ray work: dataset, labels, backbone, tokenizer. Returns the labels."""
    splits = load_splits(config)
    labels = check_splits(config.dataset, splits)
    load_tokenizer(resolve_backbone(config.backbone))
    return labels


def finetune(config: FinetuneConfig, name: str | None = None) -> FinetuneResult:
    """Train with Ray Train, keep the best dev epoch, evaluate dev and test once, write a bundle."""
    labels = preflight(config)
    output, model, state, wall_seconds = train_on_ray(
        ray_train_loop_per_worker,
        config,
        RUN_NAME,
        lambda checkpoint: load_best_model(config, checkpoint, labels),
    )
    return write_outputs(config, name, output, model, labels, state, wall_seconds)


def finetune_local(config: FinetuneConfig, name: str | None = None) -> FinetuneResult:
    """The same loop and outputs in this process, without Ray (notebooks, tests, debugging)."""
    from openmed_ray.train.loop import run_finetune_loop

    labels = preflight(config)
    output, model, state, wall_seconds = train_in_process(
        run_finetune_loop, config, lambda checkpoint: load_best_model(config, checkpoint, labels)
    )
    return write_outputs(config, name, output, model, labels, state, wall_seconds)


def write_outputs(
    config: FinetuneConfig,
    name: str | None,
    output: Path,
    model,
    labels: list[str],
    state: dict[str, Any],
    wall_seconds: float,
) -> FinetuneResult:
    """Evaluate the best model on dev and test once, then write the bundle and finetune.json."""
    from openmed_ray.datasets import require_dataset

    backbone_dir = resolve_backbone(config.backbone)
    tokenizer = load_tokenizer(backbone_dir)
    dataset = require_dataset(config.dataset, config.data_root)
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
    card = {
        "name": name or dataset.name.lower(),
        "dataset": dataset.name,
        "entity_types": sorted({label[2:] for label in labels if label != "O"}),
        "labels": labels,
        "method": config.method,
        "method_label": method_label(config),
        "decoding": config.decoding,
        "metrics": metrics,
        "decoding_comparison": decoding_comparison,
        **run_card_fields(config, state, wall_seconds, model),
        "data_files": {split: dataset.file_sha256(split) for split in ("train", "devel", "test")},
    }
    bundle_dir = output / "adapter"
    version = save_bundle(
        model, labels, card, bundle_dir, backbone_spec=config.backbone, save_dtype=config.save_dtype
    )
    card["version"] = version
    summary = {"config": config.to_dict(), "bundle": str(bundle_dir), **card}
    write_bytes_atomic(json.dumps(summary, indent=2).encode(), output / "finetune.json")
    log.info(
        "%s: dev F1 %.4f, test F1 %.4f, bundle %s",
        dataset.name,
        metrics["dev"]["f1"],
        metrics["test"]["f1"],
        bundle_dir,
    )
    return FinetuneResult(output, bundle_dir, card)


def _prf(report) -> dict[str, float]:
    return {"precision": report.precision, "recall": report.recall, "f1": report.f1}


def clear_run(output: str | Path) -> None:
    """Remove a previous run's checkpoints (used when the user asks for a fresh start)."""
    shutil.rmtree(Path(output) / "ray" / RUN_NAME, ignore_errors=True)
