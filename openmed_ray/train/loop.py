"""The fine-tuning loop, written once for Ray Train workers, Ray Tune trials and local runs.

Per epoch: train on this rank's shard, evaluate dev micro-F1 (sharded, gathered), report
metrics with a checkpoint, and stop after `patience` epochs without a dev gain. The
checkpoint carries the latest state (to resume) and the best-dev weights (to keep).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from openmed_ray.config import FinetuneConfig
from openmed_ray.datasets import require_dataset
from openmed_ray.eval.metrics import evaluate
from openmed_ray.io.iob import Sentence
from openmed_ray.models.backbones import load_tokenizer, resolve_backbone
from openmed_ray.models.classifier import TokenClassifier, build_classifier, trainable_state
from openmed_ray.models.inference import sentence_log_probs
from openmed_ray.text.decoding import BioDecoder
from openmed_ray.text.windows import EncodedWindow, WindowSpec
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
from openmed_ray.train.data import check_splits, encode_sentences, epoch_batches, steps_per_epoch
from openmed_ray.train.session import Session

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    labels: list[str]
    train_windows: list[EncodedWindow]
    dev: list[Sentence]
    dev_windows: list[list[EncodedWindow]]


def load_splits(config: FinetuneConfig) -> dict[str, list[Sentence]]:
    dataset = require_dataset(config.dataset, config.data_root)
    splits = {split: dataset.load(split) for split in ("train", "devel", "test")}
    if config.max_train_sentences is not None:
        splits["train"] = splits["train"][: config.max_train_sentences]
    return splits


def prepare_data(config: FinetuneConfig, tokenizer) -> PreparedData:
    splits = load_splits(config)
    labels = check_splits(config.dataset, splits)
    label_to_id = {label: i for i, label in enumerate(labels)}
    spec = WindowSpec(config.max_length, config.overlap)
    train_windows = [
        w for ws in encode_sentences(tokenizer, splits["train"], label_to_id, spec) for w in ws
    ]
    dev_windows = encode_sentences(tokenizer, splits["devel"], None, spec)
    return PreparedData(labels, train_windows, splits["devel"], dev_windows)


def make_optimizer(model: torch.nn.Module, config: FinetuneConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters; biases and LayerNorm weights get no weight decay."""
    return adamw(model, config.effective_learning_rate, config.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: FinetuneConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_ratio` of all steps, then cosine decay to zero."""
    return warmup_cosine(optimizer, int(round(config.warmup_ratio * total_steps)), total_steps)


def make_loss(config: FinetuneConfig) -> torch.nn.CrossEntropyLoss:
    return torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=config.label_smoothing)


def predict_tags(
    model: torch.nn.Module,
    sentences: list[Sentence],
    windows: list[list[EncodedWindow]],
    decoder: BioDecoder,
    *,
    pad_id: int,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> list[list[str]]:
    log_probs = sentence_log_probs(
        model,
        windows,
        [len(s) for s in sentences],
        pad_id=pad_id,
        batch_size=batch_size,
        device=device,
    )
    return [decoder.decode_tags(lp) for lp in log_probs]


def run_finetune_loop(config: FinetuneConfig, session: Session) -> dict[str, Any]:
    """Train until early stopping or `epochs`; returns the final state dict (metrics)."""
    set_torch_threads(config.threads_per_worker, config.workers)
    torch.manual_seed(config.seed)
    device = session.device()
    use_cuda = device.type == "cuda"
    backbone_dir = resolve_backbone(config.backbone)
    tokenizer = load_tokenizer(backbone_dir)
    data = prepare_data(config, tokenizer)
    model = build_classifier(
        backbone_dir,
        len(data.labels),
        config.lora if config.method == "lora" else None,
        head_dropout=config.head_dropout,
        gradient_checkpointing=use_cuda,  # memory for speed, only where memory is scarce
    )
    state = new_training_state(labels=data.labels)
    steps = steps_per_epoch(len(data.train_windows), config.batch_size, session.world_size)
    total_steps = steps * config.epochs
    restored, best_weights, optimizer_state = restore_training(session, model)
    state = restored or state
    model.to(device)
    model = session.prepare_model(model)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, total_steps)
    load_optimizer_state(optimizer, scheduler, optimizer_state)
    if best_weights is None:
        best_weights = trainable_state(unwrap_ddp(model))
    loss_fn = make_loss(config)
    scaler = torch.amp.GradScaler("cuda", enabled=use_cuda)
    decoder = BioDecoder(data.labels, config.decoding)
    pad_id = tokenizer.pad_token_id or 0
    n_labels = len(data.labels)

    while not training_finished(state, config.epochs):
        epoch = state["epoch"]
        model.train()
        progress = EpochProgress(epoch, steps, session.rank)
        for batch in epoch_batches(
            data.train_windows,
            global_batch_size=config.batch_size,
            rank=session.rank,
            world_size=session.world_size,
            epoch=epoch,
            seed=config.seed,
            pad_id=pad_id,
        ):
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_cuda):
                logits = model(batch.input_ids.to(device), batch.attention_mask.to(device))
                loss = loss_fn(logits.float().view(-1, n_labels), batch.labels.to(device).view(-1))
            progress.add(optimizer_step(loss, optimizer, scheduler, scaler))
        train_seconds = time.perf_counter() - progress.started

        # Dev evaluation: each rank predicts every world_size-th sentence; rank order restores it.
        mine = list(range(session.rank, len(data.dev), session.world_size))
        predicted = predict_tags(
            unwrap_ddp(model),
            [data.dev[i] for i in mine],
            [data.dev_windows[i] for i in mine],
            decoder,
            pad_id=pad_id,
            batch_size=config.eval_batch_size,
            device=device,
        )
        gathered = session.all_gather((mine, predicted))
        dev_tags: list[list[str]] = [[] for _ in data.dev]
        for indices, tags in gathered:
            for index, sentence_tags in zip(indices, tags, strict=True):
                dev_tags[index] = sentence_tags
        report = evaluate([list(s.tags) for s in data.dev], dev_tags)
        _, best_weights = finish_epoch(
            state,
            session,
            progress,
            train_seconds,
            report.f1,
            {
                "dev_precision": report.precision,
                "dev_recall": report.recall,
                "dev_strict_f1": report.strict.f1,
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


def ray_train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point for TorchTrainer workers."""
    from openmed_ray.train.session import RayTrainSession

    logging.basicConfig(level=logging.INFO)
    run_finetune_loop(FinetuneConfig.from_dict(config), RayTrainSession())


def load_best_model(
    config: FinetuneConfig, checkpoint_dir: str | Path, labels: list[str]
) -> TokenClassifier:
    """A classifier holding the best-dev weights from a checkpoint directory."""
    model = build_classifier(
        resolve_backbone(config.backbone),
        len(labels),
        config.lora if config.method == "lora" else None,
        head_dropout=config.head_dropout,
    )
    missing = model.load_state_dict(
        load_file(str(Path(checkpoint_dir) / BEST_WEIGHTS)), strict=False
    )
    if missing.unexpected_keys:
        raise RuntimeError(f"checkpoint has unexpected weights: {missing.unexpected_keys[:5]}")
    return model.eval()
