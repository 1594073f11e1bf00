"""What every training run shares: torch threads, AdamW groups, the warm-up + cosine schedule,
and the Ray Train set-up (resource check, run directory, TorchTrainer, library versions).

Fine-tuning (token classification) and DAPT (masked LM) both build on these.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from openmed_ray.errors import OpenMedError
from openmed_ray.runtime import require_resources

log = logging.getLogger(__name__)


def set_torch_threads(threads_per_worker: int | None, workers: int) -> int:
    """Set torch's thread pool explicitly (Ray sets OMP_NUM_THREADS from num_cpus)."""
    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(threads)
    return threads


def unwrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def adamw(
    model: torch.nn.Module,
    learning_rate: float,
    weight_decay: float,
    learning_rate_by_prefix: dict[str, float] | None = None,
) -> torch.optim.AdamW:
    """AdamW over trainable parameters; biases and LayerNorm weights get no weight decay.

    `learning_rate_by_prefix` gives parameters whose name starts with a prefix their own rate
    (a head trained from scratch next to a pre-trained encoder).
    """
    rates = dict(learning_rate_by_prefix or {})
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        rate = next((r for prefix, r in rates.items() if name.startswith(prefix)), learning_rate)
        decay = 0.0 if parameter.ndim < 2 or "LayerNorm" in name else weight_decay
        groups.setdefault((rate, decay), []).append(parameter)
    return torch.optim.AdamW(
        [{"params": ps, "lr": rate, "weight_decay": decay} for (rate, decay), ps in groups.items()],
        lr=learning_rate,
    )


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps`, then cosine decay to zero at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# A training checkpoint: the loop state, the latest weights (to resume) and the best-dev
# weights (to keep), and the optimizer with its schedule.
STATE_FILE = "state.json"
LATEST_WEIGHTS = "latest.safetensors"
BEST_WEIGHTS = "best.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
PROGRESS_SECONDS = 60.0  # a training-progress log line at most this often


def new_training_state(**fields: Any) -> dict[str, Any]:
    """The loop state every epoch updates (epoch, best dev score, early-stopping counters)."""
    return {
        "epoch": 0,
        "best_dev_f1": -1.0,
        "best_epoch": 0,
        "epochs_without_gain": 0,
        "history": [],
        "stopped_early": False,
        "capped": False,
        "elapsed_seconds": 0.0,
        **fields,
    }


def record_epoch(
    state: dict[str, Any],
    dev_f1: float,
    epoch_seconds: float,
    *,
    patience: int,
    epochs: int,
    max_seconds: float | None,
) -> bool:
    """Count one finished epoch: best score, patience, time budget. True if dev improved."""
    state["epoch"] += 1
    improved = dev_f1 > state["best_dev_f1"]
    if improved:
        state.update(best_dev_f1=dev_f1, best_epoch=state["epoch"], epochs_without_gain=0)
    else:
        state["epochs_without_gain"] += 1
    state["stopped_early"] = state["epochs_without_gain"] >= patience
    state["elapsed_seconds"] += epoch_seconds
    if max_seconds is not None and state["epoch"] < epochs:
        # Stop when another epoch of the same length would overrun the budget.
        state["capped"] = state["elapsed_seconds"] + epoch_seconds > max_seconds
    return improved


def training_finished(state: dict[str, Any], epochs: int) -> bool:
    return state["epoch"] >= epochs or state["stopped_early"] or state["capped"]


def checkpoint_writer(
    latest: dict[str, torch.Tensor],
    best: dict[str, torch.Tensor],
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> Callable[[Path], None]:
    """A writer of this epoch's checkpoint (values captured now, written where asked)."""
    snapshot = json.loads(json.dumps(state))
    optimizer_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}

    def write(directory: Path) -> None:
        save_file({k: v.contiguous() for k, v in latest.items()}, str(directory / LATEST_WEIGHTS))
        save_file({k: v.contiguous() for k, v in best.items()}, str(directory / BEST_WEIGHTS))
        torch.save(optimizer_state, directory / OPTIMIZER_FILE)
        (directory / STATE_FILE).write_text(json.dumps(snapshot, indent=2))

    return write


def read_checkpoint(
    directory: Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """(state, latest weights, best weights, optimizer state) of a checkpoint directory."""
    state = json.loads((directory / STATE_FILE).read_text())
    latest = load_file(str(directory / LATEST_WEIGHTS))
    best = load_file(str(directory / BEST_WEIGHTS))
    optimizer_state = torch.load(directory / OPTIMIZER_FILE, weights_only=False)
    return state, latest, best, optimizer_state


def restore_training(session, model: torch.nn.Module):
    """(state, best weights, optimizer state) from the session's checkpoint, with the latest
    weights loaded into `model`; (None, None, None) on a fresh start."""
    with session.restored_checkpoint() as checkpoint_dir:
        if checkpoint_dir is None:
            return None, None, None
        state, latest_weights, best_weights, optimizer_state = read_checkpoint(checkpoint_dir)
    model.load_state_dict(latest_weights, strict=False)
    log.info("resuming after epoch %d (best dev F1 %.4f)", state["epoch"], state["best_dev_f1"])
    return state, best_weights, optimizer_state


def load_optimizer_state(optimizer, scheduler, optimizer_state: dict[str, Any] | None) -> None:
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state["optimizer"])
        scheduler.load_state_dict(optimizer_state["scheduler"])


def optimizer_step(
    loss: torch.Tensor, optimizer, scheduler, scaler, max_grad_norm: float | None = None
) -> float:
    """Backward (scaled for fp16 on GPU), clip the gradient norm, step, schedule; returns the
    loss as a float."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if max_grad_norm is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
        torch.nn.utils.clip_grad_norm_(
            [p for group in optimizer.param_groups for p in group["params"]], max_grad_norm
        )
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return float(loss.detach())


class EpochProgress:
    """Counts an epoch's steps and logs a progress line at most every PROGRESS_SECONDS."""

    def __init__(self, epoch: int, steps: int, rank: int) -> None:
        self.epoch, self.steps, self.rank = epoch, steps, rank
        self.started = self.last = time.perf_counter()
        self.batches, self.total_loss = 0, 0.0

    def add(self, loss: float) -> None:
        self.batches += 1
        self.total_loss += loss
        if self.rank == 0 and time.perf_counter() - self.last > PROGRESS_SECONDS:
            self.last = time.perf_counter()
            log.info(
                "epoch %d: step %d/%d, loss %.4f, %.2f s/step",
                self.epoch + 1,
                self.batches,
                self.steps,
                self.mean_loss,
                (self.last - self.started) / self.batches,
            )

    @property
    def mean_loss(self) -> float:
        return self.total_loss / max(1, self.batches)


def finish_epoch(
    state: dict[str, Any],
    session,
    progress: EpochProgress,
    train_seconds: float,
    dev_f1: float,
    dev_metrics: dict[str, Any],
    trainable: Callable[[], dict[str, torch.Tensor]],
    best_weights: dict[str, torch.Tensor],
    optimizer,
    scheduler,
    *,
    patience: int,
    epochs: int,
    max_seconds: float | None,
) -> tuple[bool, dict[str, torch.Tensor]]:
    """Record the epoch (early stopping, time budget), report its metrics with a checkpoint
    and log it. Returns (dev improved, the best weights so far)."""
    import numpy as np

    losses = session.all_gather(progress.mean_loss)
    improved = record_epoch(
        state,
        dev_f1,
        time.perf_counter() - progress.started,
        patience=patience,
        epochs=epochs,
        max_seconds=max_seconds,
    )
    if improved:
        best_weights = trainable()
    metrics = {
        "epoch": state["epoch"],
        "train_loss": float(np.mean(losses)),
        **dev_metrics,
        "dev_f1": dev_f1,
        "best_dev_f1": state["best_dev_f1"],
        "best_epoch": state["best_epoch"],
        "learning_rate": scheduler.get_last_lr()[0],
        "epoch_seconds": round(time.perf_counter() - progress.started, 2),
        "train_seconds": round(train_seconds, 2),
        "stopped_early": state["stopped_early"],
        "capped": state["capped"],
    }
    state["history"].append(metrics)
    # The whole run's dev F1 rides on each report: a run restored from its checkpoint by a
    # new driver (a resumed sweep) reports only its later epochs, and the ledger needs all.
    reported = {**metrics, "dev_f1_by_epoch": [h["dev_f1"] for h in state["history"]]}
    session.report(
        reported, checkpoint_writer(trainable(), best_weights, state, optimizer, scheduler)
    )
    if session.rank == 0:
        log.info(
            "epoch %d: loss %.4f dev F1 %.4f (best %.4f @ %d) %.1fs",
            state["epoch"],
            metrics["train_loss"],
            dev_f1,
            state["best_dev_f1"],
            state["best_epoch"],
            metrics["epoch_seconds"],
        )
    return improved, best_weights


def check_worker_resources(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> None:
    require_resources(
        workers,
        cpus_per_worker,
        gpus_per_worker,
        "worker",
        "lower --workers, --cpus-per-worker or --gpus-per-worker (CPU training needs no GPU)",
    )


def worker_config(config: Any) -> dict[str, Any]:
    """The config as Ray workers get it. A worker's working directory is not the driver's, so a
    path given relative to the driver's (data root, backbone or warm-start bundle directory) is
    made absolute; names stay names, with the same precedence as their resolvers (built-in
    backbones, catalog adapters)."""
    from openmed_ray.config import resolve_data_root
    from openmed_ray.models.backbones import BUILTIN_BACKBONES
    from openmed_ray.models.catalog import catalog_entries

    fields = config.to_dict()
    if fields.get("data_root"):
        fields["data_root"] = str(resolve_data_root(fields["data_root"]))
    if (backbone := fields.get("backbone")) and backbone not in BUILTIN_BACKBONES:
        fields["backbone"] = _absolute_if_local(backbone)
    if (init_from := fields.get("init_from")) and init_from not in catalog_entries():
        fields["init_from"] = _absolute_if_local(init_from)
    return fields


def _absolute_if_local(value: str) -> str:
    """`value` as an absolute path where it names something on this machine, else unchanged."""
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


def run_storage(output: Path, run_name: str, resume: bool) -> Path:
    """OUTPUT/ray, refusing to silently restart over an earlier run unless resuming."""
    storage = output / "ray"
    if (storage / run_name).exists() and not resume:
        raise OpenMedError(
            f"{output} already holds a training run; pass --resume to continue it, or choose "
            "another --output"
        )
    return storage


def fit_torch_trainer(
    loop: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    *,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    storage: Path,
    run_name: str,
    datasets: dict[str, Any] | None = None,
):
    """Run `loop` on `workers` DDP workers (gloo on CPU, NCCL on GPU); the Result must carry a
    checkpoint (Train V2 keeps metrics only with one). `datasets` are sharded across workers."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = gpus_per_worker > 0
    resources = {"CPU": cpus_per_worker}
    if use_gpu:
        resources["GPU"] = gpus_per_worker
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=run_name,
            storage_path=str(storage),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
        datasets=datasets,
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise OpenMedError(f"training produced no checkpoint; see the Ray logs under {storage}")
    return result


def train_on_ray(
    loop: Callable[[dict[str, Any]], None],
    config: Any,
    run_name: str,
    load_best: Callable[[Path], torch.nn.Module],
) -> tuple[Path, torch.nn.Module, dict[str, Any], float]:
    """Run a training loop on Ray Train for a config with output, resume and worker fields:
    (output directory, the best-dev model, the final loop state, wall seconds)."""
    from openmed_ray.runtime import ensure_ray

    output = Path(config.output).expanduser().resolve()
    storage = run_storage(output, run_name, config.resume)
    ensure_ray()
    check_worker_resources(config.workers, config.cpus_per_worker, config.gpus_per_worker)
    started = time.perf_counter()
    result = fit_torch_trainer(
        loop,
        worker_config(config),
        workers=config.workers,
        cpus_per_worker=config.cpus_per_worker,
        gpus_per_worker=config.gpus_per_worker,
        storage=storage,
        run_name=run_name,
    )
    wall_seconds = time.perf_counter() - started
    with result.checkpoint.as_directory() as checkpoint_dir:
        state = json.loads((Path(checkpoint_dir) / STATE_FILE).read_text())
        model = load_best(Path(checkpoint_dir))
    return output, model, state, wall_seconds


def train_in_process(
    loop: Callable[[Any, Any], dict[str, Any]],
    config: Any,
    load_best: Callable[[Path], torch.nn.Module],
) -> tuple[Path, torch.nn.Module, dict[str, Any], float]:
    """The same loop in this process (OUTPUT/checkpoint), without Ray: same return values."""
    from openmed_ray.train.session import LocalSession

    output = Path(config.output).expanduser().resolve()
    session = LocalSession(output / "checkpoint", resume=config.resume)
    started = time.perf_counter()
    state = loop(config, session)
    return output, load_best(session.checkpoint_dir), state, time.perf_counter() - started


def run_card_fields(
    config: Any, state: dict[str, Any], wall_seconds: float, model: torch.nn.Module
) -> dict[str, Any]:
    """What every trained bundle's card says of its run: hyperparameters, epochs, timings,
    size, history, library versions."""
    from openmed_ray.models.classifier import count_parameters

    history = state["history"]
    train_seconds = round(sum(h["epoch_seconds"] for h in history), 1)
    trainable, total = count_parameters(model)
    excluded = ("output", "data_root", "resume")
    return {
        "hyperparameters": {k: v for k, v in config.to_dict().items() if k not in excluded},
        "epochs_trained": state["epoch"],
        "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped_early"],
        "capped_by_time_budget": state.get("capped", False),
        "train_seconds": train_seconds,
        "seconds_per_epoch": round(train_seconds / max(1, len(history)), 1),
        "wall_seconds": round(wall_seconds, 1),
        "workers": config.workers,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "history": history,
        "versions": library_versions(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def library_versions() -> dict[str, str]:
    import peft
    import ray
    import transformers

    import openmed_ray

    return {
        "openmed_ray": openmed_ray.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "ray": ray.__version__,
    }
