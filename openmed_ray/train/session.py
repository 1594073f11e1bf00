"""Where a training loop reports to: Ray Train, Ray Tune, or an in-process run.

The fine-tuning loop is written once against this interface, so Ray Train (fine-tuning) and
Ray Tune (HPO trials) run exactly the same code.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

CheckpointWriter = Callable[[Path], None]


@contextmanager
def _as_directory(checkpoint):
    """A Ray checkpoint (or None) as a local directory for the duration of the block."""
    if checkpoint is None:
        yield None
    else:
        with checkpoint.as_directory() as directory:
            yield Path(directory)


class Session:
    rank: int = 0
    world_size: int = 1

    def device(self) -> torch.device:
        return torch.device("cpu")

    def prepare_model(
        self, model: torch.nn.Module, find_unused_parameters: bool = False
    ) -> torch.nn.Module:
        return model

    @contextmanager
    def restored_checkpoint(self):
        """Yields the directory of the checkpoint to resume from, or None."""
        yield None

    def report(self, metrics: dict[str, Any], write_checkpoint: CheckpointWriter) -> None:
        raise NotImplementedError

    def all_gather(self, value: Any) -> list[Any]:
        return [value]


class LocalSession(Session):
    """In-process: checkpoints go to a directory, metrics to a list (tests, notebooks)."""

    def __init__(self, checkpoint_dir: str | Path, resume: bool = False) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.resume = resume
        self.reports: list[dict[str, Any]] = []

    @contextmanager
    def restored_checkpoint(self):
        has_checkpoint = (self.checkpoint_dir / "state.json").is_file()
        yield self.checkpoint_dir if self.resume and has_checkpoint else None

    def report(self, metrics: dict[str, Any], write_checkpoint: CheckpointWriter) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        write_checkpoint(self.checkpoint_dir)
        self.reports.append(dict(metrics))


class RayTrainSession(Session):
    """Inside a TorchTrainer worker: DDP via prepare_model, checkpoints via ray.train.report."""

    def __init__(self) -> None:
        import ray.train

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(
        self, model: torch.nn.Module, find_unused_parameters: bool = False
    ) -> torch.nn.Module:
        import ray.train.torch

        kwargs = {"find_unused_parameters": True} if find_unused_parameters else None
        return ray.train.torch.prepare_model(model, parallel_strategy_kwargs=kwargs)

    def restored_checkpoint(self):
        import ray.train

        return _as_directory(ray.train.get_checkpoint())

    def report(self, metrics: dict[str, Any], write_checkpoint: CheckpointWriter) -> None:
        import ray.train

        # Train V2 keeps metrics only with a checkpoint; every rank must call report.
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if self.rank == 0:
                write_checkpoint(Path(directory))
                checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=checkpoint)

    def all_gather(self, value: Any) -> list[Any]:
        if self.world_size == 1:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, value)
        return gathered


class RayTuneSession(Session):
    """Inside a Ray Tune trial (one process): checkpoints via ray.tune.report."""

    def device(self) -> torch.device:
        import ray

        # Ray sets CUDA_VISIBLE_DEVICES to the trial's (possibly fractional) GPU.
        return torch.device("cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")

    def restored_checkpoint(self):
        from ray import tune

        return _as_directory(tune.get_checkpoint())

    def report(self, metrics: dict[str, Any], write_checkpoint: CheckpointWriter) -> None:
        from ray import tune

        with tempfile.TemporaryDirectory() as directory:
            write_checkpoint(Path(directory))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
