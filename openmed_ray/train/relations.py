"""Relation classifier training on Ray Train: pre-flight, TorchTrainer, then the bundle.

OUTPUT/adapter/        the relation bundle (best dev epoch, dev-chosen score threshold)
OUTPUT/ray/relations/  Ray Train run: checkpoints used by --resume
OUTPUT/relations.json  config, per-epoch history, dev and test metrics
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmed_ray.config import RelationTrainConfig
from openmed_ray.eval.relations import best_threshold, relation_prf
from openmed_ray.io.filesystem import write_bytes_atomic
from openmed_ray.models.backbones import load_tokenizer, resolve_backbone
from openmed_ray.models.bundle import save_bundle
from openmed_ray.models.catalog import resolve_adapter
from openmed_ray.models.relation import RelationClassifier, check_warm_start, predict_pairs
from openmed_ray.models.warm_start import init_from_record
from openmed_ray.relations.datasets import relation_dataset
from openmed_ray.relations.encoding import marker_id
from openmed_ray.relations.examples import RelationDataError, RelationTask, gold_triples
from openmed_ray.train.common import run_card_fields, train_in_process, train_on_ray
from openmed_ray.train.relation_loop import (
    encode_split,
    load_best_relation_model,
    load_relation_splits,
    ray_relation_loop_per_worker,
    scored_triples,
)

log = logging.getLogger(__name__)

RUN_NAME = "relations"


@dataclass
class RelationTrainResult:
    output: Path
    bundle: Path
    card: dict[str, Any]


def method_label(config: RelationTrainConfig) -> str:
    if config.method == "full":
        return "full fine-tuning"
    return f"{','.join(config.lora.targets)} LoRA r{config.lora.rank}"


def preflight(config: RelationTrainConfig) -> tuple[RelationTask, dict[str, Any] | None]:
    """Fail before any Ray work: dataset files, gold pairs, backbone and its tokenizer, and the
    bundle the run starts from. Returns the task and the card's `init_from` record (or None)."""
    task, splits = load_relation_splits(config)
    marker_id(load_tokenizer(resolve_backbone(config.backbone)))
    if not any(d.relations for d in splits["train"]):
        raise RelationDataError(f"{config.dataset}: the training split has no gold relations")
    if not config.init_from:
        return task, None
    start = check_warm_start(
        resolve_adapter(config.init_from),
        backbone=config.backbone,
        method=config.method,
        lora=config.lora,
        pair_scoring=config.pair_scoring,
        labels=task.labels,
    )
    return task, init_from_record(config.init_from, start)


def train_relations(config: RelationTrainConfig, name: str | None = None) -> RelationTrainResult:
    """Train on Ray Train, keep the best dev epoch, evaluate dev and test once, write a bundle."""
    task, init_from = preflight(config)
    output, model, state, wall_seconds = train_on_ray(
        ray_relation_loop_per_worker,
        config,
        RUN_NAME,
        lambda checkpoint: load_best_relation_model(config, checkpoint, len(task.labels)),
    )
    return write_relation_outputs(config, name, output, model, task, state, wall_seconds, init_from)


def train_relations_local(
    config: RelationTrainConfig, name: str | None = None
) -> RelationTrainResult:
    """The same loop and outputs in this process, without Ray (tests, notebooks, debugging)."""
    from openmed_ray.train.relation_loop import run_relation_loop

    task, init_from = preflight(config)
    output, model, state, wall_seconds = train_in_process(
        run_relation_loop,
        config,
        lambda checkpoint: load_best_relation_model(config, checkpoint, len(task.labels)),
    )
    return write_relation_outputs(config, name, output, model, task, state, wall_seconds, init_from)


def evaluate_relation_split(
    model: RelationClassifier,
    tokenizer,
    config: RelationTrainConfig,
    split: str,
) -> tuple[list, set]:
    """(scored triples, gold triples) of one split of the config's dataset."""
    dataset = relation_dataset(config.dataset, config.data_root)
    documents = dataset.load(split)
    encoded = encode_split(tokenizer, documents, dataset.task, config, labeled=False)
    predictions = predict_pairs(
        model, encoded, pad_id=tokenizer.pad_token_id or 0, batch_size=config.eval_batch_size
    )
    return scored_triples(dataset.task, encoded, predictions), gold_triples(documents)


def write_relation_outputs(
    config: RelationTrainConfig,
    name: str | None,
    output: Path,
    model: RelationClassifier,
    task: RelationTask,
    state: dict[str, Any],
    wall_seconds: float,
    init_from: dict[str, Any] | None = None,
) -> RelationTrainResult:
    """Choose the threshold on dev, evaluate test once at it, write the bundle and summary."""
    dataset = relation_dataset(config.dataset, config.data_root)
    tokenizer = load_tokenizer(resolve_backbone(config.backbone))
    dev_scored, dev_gold = evaluate_relation_split(model, tokenizer, config, "devel")
    dev = best_threshold(dev_scored, dev_gold)
    test_scored, test_gold = evaluate_relation_split(model, tokenizer, config, "test")
    test = relation_prf(
        [t for t, score in test_scored if score >= dev.threshold], test_gold, dev.threshold
    )
    card = {
        "name": name or task.name,
        "task": "relation",
        "relation_task": task.to_dict(),
        "dataset": dataset.name,
        "labels": task.labels,
        "method": config.method,
        "method_label": method_label(config),
        "threshold": round(dev.threshold, 6),
        "metrics": {"dev": dev.to_dict(), "test": test.to_dict()},
        **run_card_fields(config, state, wall_seconds, model),
        "data_files": {split: dataset.file_sha256(split) for split in ("train", "devel", "test")},
    }
    if init_from:
        card["init_from"] = init_from
    bundle_dir = output / "adapter"
    card = save_bundle(
        model, task.labels, card, bundle_dir, backbone_spec=config.backbone,
        save_dtype=config.save_dtype, labels_scheme="relation",
    )  # fmt: skip
    summary = {"config": config.to_dict(), "bundle": str(bundle_dir), **card}
    write_bytes_atomic(json.dumps(summary, indent=2).encode(), output / "relations.json")
    log.info(
        "%s: dev F1 %.4f at threshold %.3f, test F1 %.4f, bundle %s",
        dataset.name,
        dev.f1,
        dev.threshold,
        test.f1,
        bundle_dir,
    )
    return RelationTrainResult(output, bundle_dir, card)
