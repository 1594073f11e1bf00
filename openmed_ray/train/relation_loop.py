"""The relation classifier's training loop, for Ray Train workers and local runs.

Per epoch: shuffle the training documents, step over global batches of documents (each
rank takes its share of every batch), score the dev documents' candidate pairs, and keep
the epoch with the best dev F1 at its best threshold. Checkpoints carry the latest state
(to resume) and the best-dev weights (to keep), as in the token-classification loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from openmed_ray.config import RelationTrainConfig
from openmed_ray.eval.relations import Triple, best_threshold
from openmed_ray.models.backbones import load_tokenizer, resolve_backbone
from openmed_ray.models.catalog import resolve_adapter
from openmed_ray.models.classifier import trainable_state
from openmed_ray.models.relation import (
    PairPredictions,
    RelationClassifier,
    build_relation_classifier,
    collate,
    load_warm_start,
    predict_pairs,
)
from openmed_ray.relations.datasets import relation_dataset
from openmed_ray.relations.encoding import EncodedRelationDocument, encode_documents
from openmed_ray.relations.examples import RelationDocument, RelationTask, gold_triples
from openmed_ray.train.common import (
    BEST_WEIGHTS,
    EpochProgress,
    adamw,
    finish_epoch,
    load_optimizer_state,
    new_training_state,
    optimizer_step,
    restore_training,
    set_torch_threads,
    training_finished,
    unwrap_ddp,
    warmup_cosine,
)
from openmed_ray.train.session import Session

log = logging.getLogger(__name__)


@dataclass
class RelationData:
    task: RelationTask
    train: list[EncodedRelationDocument]
    dev: list[RelationDocument]
    dev_encoded: list[EncodedRelationDocument]


def load_relation_splits(config: RelationTrainConfig) -> tuple[RelationTask, dict]:
    dataset = relation_dataset(config.dataset, config.data_root)
    splits = {split: dataset.load(split) for split in ("train", "devel")}
    if config.max_train_documents is not None:
        splits["train"] = splits["train"][: config.max_train_documents]
    return dataset.task, splits


def encode_split(
    tokenizer, documents: Sequence[RelationDocument], task: RelationTask, config, labeled: bool
) -> list[EncodedRelationDocument]:
    return encode_documents(
        tokenizer,
        documents,
        task,
        max_length=config.max_length,
        overlap=config.overlap,
        labeled=labeled,
    )


def prepare_relation_data(config: RelationTrainConfig, tokenizer) -> RelationData:
    task, splits = load_relation_splits(config)
    train = encode_split(tokenizer, splits["train"], task, config, labeled=True)
    dev_encoded = encode_split(tokenizer, splits["devel"], task, config, labeled=False)
    # A document without a candidate pair carries no training signal.
    return RelationData(task, [d for d in train if d.pairs], splits["devel"], dev_encoded)


def scored_triples(
    task: RelationTask,
    encoded: Sequence[EncodedRelationDocument],
    predictions: Sequence[PairPredictions],
) -> list[tuple[Triple, float]]:
    """((doc, head key, tail key, relation), probability) for every pair and relation label."""
    out = []
    for document, predicted in zip(encoded, predictions, strict=True):
        for (h, t), row in zip(document.pairs, predicted.probabilities, strict=True):
            head, tail = document.entities[h][1], document.entities[t][1]
            for label_index, relation in enumerate(task.labels[1:], start=1):
                out.append(((document.doc_id, head, tail, relation), float(row[label_index])))
    return out


def document_batches(
    n_documents: int, batch_size: int, *, rank: int, world_size: int, epoch: int, seed: int
) -> Iterator[list[int]]:
    """This rank's share of each shuffled global batch (batches smaller than the world skip)."""
    order = np.random.default_rng(seed + epoch).permutation(n_documents)
    for begin in range(0, n_documents, batch_size):
        batch = order[begin : begin + batch_size]
        if len(batch) < world_size:
            return
        yield [int(i) for i in batch[rank::world_size]]


def run_relation_loop(config: RelationTrainConfig, session: Session) -> dict[str, Any]:
    """Train until early stopping or `epochs`; returns the final state (with its history)."""
    set_torch_threads(config.threads_per_worker, config.workers)
    torch.manual_seed(config.seed)
    device = session.device()
    use_cuda = device.type == "cuda"
    backbone_dir = resolve_backbone(config.backbone)
    tokenizer = load_tokenizer(backbone_dir)
    data = prepare_relation_data(config, tokenizer)
    gold = gold_triples(data.dev)
    model = build_relation_classifier(
        backbone_dir,
        len(data.task.labels),
        config.lora if config.method == "lora" else None,
        dropout=config.dropout,
        gradient_checkpointing=use_cuda,
        pair_scoring=config.pair_scoring,
    )
    if config.init_from:  # a checkpoint restored below still takes precedence
        load_warm_start(model, resolve_adapter(config.init_from))
    state = new_training_state(labels=data.task.labels)
    steps = sum(
        1
        for _ in document_batches(
            len(data.train),
            config.batch_size,
            rank=0,
            world_size=session.world_size,
            epoch=0,
            seed=config.seed,
        )
    )
    total_steps = steps * config.epochs
    restored, best_weights, optimizer_state = restore_training(session, model)
    state = restored or state
    model.to(device)
    model = session.prepare_model(model)
    optimizer = adamw(
        model,
        config.effective_learning_rate,
        config.weight_decay,
        {"head.": config.head_learning_rate, "module.head.": config.head_learning_rate},
    )
    scheduler = warmup_cosine(optimizer, int(round(config.warmup_ratio * total_steps)), total_steps)
    load_optimizer_state(optimizer, scheduler, optimizer_state)
    if best_weights is None:
        best_weights = trainable_state(unwrap_ddp(model))
    loss_fn = torch.nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cuda", enabled=use_cuda)
    pad_id = tokenizer.pad_token_id or 0

    while not training_finished(state, config.epochs):
        epoch = state["epoch"]
        model.train()
        progress = EpochProgress(epoch, steps, session.rank)
        for indices in document_batches(
            len(data.train),
            config.batch_size,
            rank=session.rank,
            world_size=session.world_size,
            epoch=epoch,
            seed=config.seed,
        ):
            batch = collate([data.train[i] for i in indices], pad_id).to(device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_cuda):
                loss = loss_fn(model(batch).float(), batch.labels)
            progress.add(optimizer_step(loss, optimizer, scheduler, scaler))
        train_seconds = time.perf_counter() - progress.started

        # Dev: each rank scores every world_size-th document; the gathered scores are complete.
        mine = list(range(session.rank, len(data.dev_encoded), session.world_size))
        predictions = predict_pairs(
            unwrap_ddp(model),
            [data.dev_encoded[i] for i in mine],
            pad_id=pad_id,
            batch_size=config.eval_batch_size,
            device=device,
        )
        scored = [
            item
            for part in session.all_gather(
                scored_triples(data.task, [data.dev_encoded[i] for i in mine], predictions)
            )
            for item in part
        ]
        dev = best_threshold(scored, gold)
        _, best_weights = finish_epoch(
            state,
            session,
            progress,
            train_seconds,
            dev.f1,
            {
                "dev_precision": dev.precision,
                "dev_recall": dev.recall,
                "dev_threshold": dev.threshold,
            },
            lambda: trainable_state(unwrap_ddp(model)),
            best_weights,
            optimizer,
            scheduler,
            patience=config.patience,
            epochs=config.epochs,
            max_seconds=config.max_seconds,
        )
    return state


def ray_relation_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point for TorchTrainer workers."""
    from openmed_ray.train.session import RayTrainSession

    logging.basicConfig(level=logging.INFO)
    run_relation_loop(RelationTrainConfig.from_dict(config), RayTrainSession())


def load_best_relation_model(
    config: RelationTrainConfig, checkpoint_dir: str | Path, n_labels: int
) -> RelationClassifier:
    """A relation classifier holding the best-dev weights of a checkpoint directory."""
    model = build_relation_classifier(
        resolve_backbone(config.backbone),
        n_labels,
        config.lora if config.method == "lora" else None,
        dropout=config.dropout,
        pair_scoring=config.pair_scoring,
    )
    missing = model.load_state_dict(
        load_file(str(Path(checkpoint_dir) / BEST_WEIGHTS)), strict=False
    )
    if missing.unexpected_keys:
        raise RuntimeError(f"checkpoint has unexpected weights: {missing.unexpected_keys[:5]}")
    return model.eval()
