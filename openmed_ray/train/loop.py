"""The fine-tuning loop, written once for Ray Train workers, Ray Tune trials and local runs.

Per epoch: train on this rank's shard, evaluate dev micro-F1 (sharded, gathered), report
metrics with a checkpoint, and stop after `patience` epochs without a dev gain. The
checkpoint carries the latest state (to resume) and the best-dev weights (to keep). One
dataset trains a single-head classifier; several (`datasets`) train one multi-task model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from openmed_ray.config import FinetuneConfig
from openmed_ray.datasets import require_dataset
from openmed_ray.eval.metrics import evaluate
from openmed_ray.io.iob import Sentence
from openmed_ray.models.backbones import load_tokenizer, resolve_backbone
from openmed_ray.models.catalog import adapter_name_for, resolve_adapter
from openmed_ray.models.classifier import (
    HeadView,
    MultiTaskTokenClassifier,
    TokenClassifier,
    build_classifier,
    build_multitask_classifier,
    trainable_state,
)
from openmed_ray.models.inference import sentence_log_probs
from openmed_ray.models.warm_start import load_ner_warm_start
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
from openmed_ray.train.data import (
    TrainingDataError,
    check_splits,
    encode_sentences,
    epoch_batches,
    mixed_batch_schedule,
    steps_per_epoch,
)
from openmed_ray.train.session import Session

log = logging.getLogger(__name__)


@dataclass
class TaskData:
    """One dataset of a run: its head, labels, training windows and dev set."""

    head: str
    dataset: str
    labels: list[str]
    train_windows: list[EncodedWindow]
    dev: list[Sentence]
    dev_windows: list[list[EncodedWindow]]


def head_names(config: FinetuneConfig) -> list[str]:
    """One head name per trained dataset: `head_names`, else each dataset's catalog name."""
    if config.head_names:
        return list(config.head_names)
    names = [adapter_name_for(dataset) for dataset in config.task_datasets]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise TrainingDataError(
            f"datasets {list(config.task_datasets)} would share head name(s) {clashes}; "
            "give each a name with head_names (--head-names)"
        )
    return names


def load_splits(
    config: FinetuneConfig, dataset_name: str | None = None
) -> dict[str, list[Sentence]]:
    dataset = require_dataset(dataset_name or config.dataset, config.data_root)
    splits = {split: dataset.load(split) for split in ("train", "devel", "test")}
    if config.max_train_sentences is not None:
        splits["train"] = splits["train"][: config.max_train_sentences]
    return splits


def check_tasks(config: FinetuneConfig) -> dict[str, list[str]]:
    """Head name -> labels of every dataset, each checked (fails before any training)."""
    return {
        head: check_splits(dataset, load_splits(config, dataset))
        for head, dataset in zip(head_names(config), config.task_datasets, strict=True)
    }


def prepare_data(config: FinetuneConfig, tokenizer) -> list[TaskData]:
    spec = WindowSpec(config.max_length, config.overlap)
    tasks = []
    for head, dataset in zip(head_names(config), config.task_datasets, strict=True):
        splits = load_splits(config, dataset)
        labels = check_splits(dataset, splits)
        label_to_id = {label: i for i, label in enumerate(labels)}
        train = encode_sentences(tokenizer, splits["train"], label_to_id, spec)
        dev_windows = encode_sentences(tokenizer, splits["devel"], None, spec)
        tasks.append(
            TaskData(
                head,
                dataset,
                labels,
                [w for ws in train for w in ws],
                splits["devel"],
                dev_windows,
            )
        )
    return tasks


def build_model(
    config: FinetuneConfig, head_labels: dict[str, list[str]], gradient_checkpointing: bool = False
) -> TokenClassifier | MultiTaskTokenClassifier:
    """A fresh model for the config: one head, or one per dataset for a multi-task run."""
    lora = config.lora if config.method == "lora" else None
    backbone_dir = resolve_backbone(config.backbone)
    if config.multitask:
        return build_multitask_classifier(
            backbone_dir,
            {head: len(labels) for head, labels in head_labels.items()},
            lora,
            head_dropout=config.head_dropout,
            gradient_checkpointing=gradient_checkpointing,
        )
    (labels,) = head_labels.values()
    return build_classifier(
        backbone_dir,
        len(labels),
        lora,
        head_dropout=config.head_dropout,
        gradient_checkpointing=gradient_checkpointing,
    )


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
    """Train until early stopping or `epochs`; returns the final state dict (metrics).

    A multi-task run (`config.datasets`) trains one shared encoder with a head per dataset:
    each batch comes from one dataset (`config.sampling`) and trains its head; dev F1 is
    measured per dataset and their mean drives model selection and early stopping."""
    set_torch_threads(config.threads_per_worker, config.workers)
    torch.manual_seed(config.seed)
    device = session.device()
    use_cuda = device.type == "cuda"
    tokenizer = load_tokenizer(resolve_backbone(config.backbone))
    tasks = prepare_data(config, tokenizer)
    model = build_model(
        config,
        {task.head: task.labels for task in tasks},
        gradient_checkpointing=use_cuda,  # memory for speed, only where memory is scarce
    )
    if config.init_from:  # a checkpoint restored below still takes precedence
        load_ner_warm_start(model, resolve_adapter(config.init_from))
    state = (
        new_training_state(heads={task.head: task.labels for task in tasks})
        if config.multitask
        else new_training_state(labels=tasks[0].labels)
    )
    batch_counts = [
        steps_per_epoch(len(t.train_windows), config.batch_size, session.world_size) for t in tasks
    ]
    steps = sum(batch_counts)
    total_steps = steps * config.epochs
    restored, best_weights, optimizer_state = restore_training(session, model)
    state = restored or state
    model.to(device)
    # A multi-task step trains one head: DDP must not wait for the others' gradients.
    model = session.prepare_model(model, find_unused_parameters=config.multitask)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, total_steps)
    load_optimizer_state(optimizer, scheduler, optimizer_state)
    if best_weights is None:
        best_weights = trainable_state(unwrap_ddp(model))
    loss_fn = make_loss(config)
    scaler = torch.amp.GradScaler("cuda", enabled=use_cuda)
    decoders = [BioDecoder(task.labels, config.decoding) for task in tasks]
    pad_id = tokenizer.pad_token_id or 0

    while not training_finished(state, config.epochs):
        epoch = state["epoch"]
        model.train()
        progress = EpochProgress(epoch, steps, session.rank)
        task_batches = [
            epoch_batches(
                task.train_windows,
                global_batch_size=config.batch_size,
                rank=session.rank,
                world_size=session.world_size,
                epoch=epoch,
                seed=config.seed,
                pad_id=pad_id,
            )
            for task in tasks
        ]
        schedule = mixed_batch_schedule(
            batch_counts,
            config.sampling,
            config.sampling_temperature,
            np.random.default_rng([config.seed, epoch]),
        )
        for task_index, batch_index in schedule:
            batch = task_batches[task_index][batch_index]
            head = (tasks[task_index].head,) if config.multitask else ()
            n_labels = len(tasks[task_index].labels)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_cuda):
                logits = model(batch.input_ids.to(device), batch.attention_mask.to(device), *head)
                loss = loss_fn(logits.float().view(-1, n_labels), batch.labels.to(device).view(-1))
            progress.add(optimizer_step(loss, optimizer, scheduler, scaler, config.max_grad_norm))
        train_seconds = time.perf_counter() - progress.started

        reports = [
            evaluate_dev(unwrap_ddp(model), task, decoder, session, config, pad_id, device)
            for task, decoder in zip(tasks, decoders, strict=True)
        ]
        dev_f1 = float(np.mean([r.f1 for r in reports]))
        dev_metrics: dict[str, Any] = {
            "dev_precision": float(np.mean([r.precision for r in reports])),
            "dev_recall": float(np.mean([r.recall for r in reports])),
            "dev_strict_f1": float(np.mean([r.strict.f1 for r in reports])),
        }
        if config.multitask:
            dev_metrics.update(
                {f"dev_f1/{t.head}": r.f1 for t, r in zip(tasks, reports, strict=True)}
            )
        _, best_weights = finish_epoch(
            state,
            session,
            progress,
            train_seconds,
            dev_f1,
            dev_metrics,
            lambda: trainable_state(unwrap_ddp(model)),
            best_weights,
            optimizer,
            scheduler,
            patience=config.patience,
            epochs=config.epochs,
            max_seconds=config.max_seconds,
        )
    return state


def evaluate_dev(
    model: torch.nn.Module,
    task: TaskData,
    decoder: BioDecoder,
    session: Session,
    config: FinetuneConfig,
    pad_id: int,
    device: torch.device,
):
    """Dev micro-F1 of one task: each rank predicts every world_size-th sentence, gathered."""
    if isinstance(model, MultiTaskTokenClassifier):
        model = HeadView(model, task.head)
    mine = list(range(session.rank, len(task.dev), session.world_size))
    predicted = predict_tags(
        model,
        [task.dev[i] for i in mine],
        [task.dev_windows[i] for i in mine],
        decoder,
        pad_id=pad_id,
        batch_size=config.eval_batch_size,
        device=device,
    )
    dev_tags: list[list[str]] = [[] for _ in task.dev]
    for indices, tags in session.all_gather((mine, predicted)):
        for index, sentence_tags in zip(indices, tags, strict=True):
            dev_tags[index] = sentence_tags
    return evaluate([list(s.tags) for s in task.dev], dev_tags)


def ray_train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point for TorchTrainer workers."""
    from openmed_ray.train.session import RayTrainSession

    logging.basicConfig(level=logging.INFO)
    run_finetune_loop(FinetuneConfig.from_dict(config), RayTrainSession())


def load_best_model(
    config: FinetuneConfig, checkpoint_dir: str | Path, head_labels: dict[str, list[str]]
) -> TokenClassifier | MultiTaskTokenClassifier:
    """A model holding the best-dev weights from a checkpoint directory."""
    model = build_model(config, head_labels)
    missing = model.load_state_dict(
        load_file(str(Path(checkpoint_dir) / BEST_WEIGHTS)), strict=False
    )
    if missing.unexpected_keys:
        raise RuntimeError(f"checkpoint has unexpected weights: {missing.unexpected_keys[:5]}")
    return model.eval()
