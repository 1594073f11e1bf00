"""What every training run shares: torch threads, AdamW groups, the warm-up + cosine schedule,
and the Ray Train set-up (resource check, run directory, TorchTrainer, library versions).

Fine-tuning (token classification) and DAPT (masked LM) both build on these.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from openmed_ray.errors import OpenMedError
from openmed_ray.runtime import require_resources


def set_torch_threads(threads_per_worker: int | None, workers: int) -> int:
    """Set torch's thread pool explicitly (Ray sets OMP_NUM_THREADS from num_cpus)."""
    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(threads)
    return threads


def unwrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def adamw(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over trainable parameters; biases and LayerNorm weights get no weight decay."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=learning_rate)


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


def check_worker_resources(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> None:
    require_resources(
        workers,
        cpus_per_worker,
        gpus_per_worker,
        "worker",
        "lower --workers, --cpus-per-worker or --gpus-per-worker (CPU training needs no GPU)",
    )


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
