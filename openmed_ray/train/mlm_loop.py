"""The DAPT loop, for Ray Train workers: masked-LM steps on this worker's share of the corpus.

Each worker reads its Ray Data shard (`get_dataset_shard("train")`), tokenizes and masks 15%
of the wordpieces dynamically (DataCollatorForLanguageModeling), and takes `max_steps`
optimizer steps of `batch_size` x `grad_accum` sequences (summed over workers), passing over
the corpus as many times as that needs. Every `checkpoint_every` steps (and at the last) it
reports metrics with a checkpoint: the trainable weights, optimizer, scheduler and counters.
A resumed run continues at the checkpoint's step with its optimizer and schedule; the data
starts a fresh pass (a streamed shard has no position to return to).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from openmed_ray.config import DaptConfig
from openmed_ray.io.passages import CorpusError
from openmed_ray.models.backbones import load_tokenizer, resolve_backbone
from openmed_ray.models.classifier import trainable_state
from openmed_ray.models.masked_lm import MaskedLM, build_masked_lm, make_collator, mask_batch
from openmed_ray.train.common import (
    LATEST_WEIGHTS,
    OPTIMIZER_FILE,
    PROGRESS_SECONDS,
    STATE_FILE,
    adamw,
    set_torch_threads,
    unwrap_ddp,
    warmup_cosine,
)
from openmed_ray.train.session import Session

log = logging.getLogger(__name__)

# Texts of one micro-batch per call, for one pass (epoch) over this worker's shard.
BatchSource = Callable[[int], Iterable[Sequence[str]]]


def build_initial_model(config: DaptConfig, gradient_checkpointing: bool = False) -> MaskedLM:
    """The model every worker (and the driver's 'before' perplexity) starts from: the head
    layers a checkpoint lacks are initialised under the run's seed, so all agree."""
    torch.manual_seed(config.seed)
    return build_masked_lm(resolve_backbone(config.backbone), config.lora, gradient_checkpointing)


def load_trainable(model: MaskedLM, checkpoint_dir: str | Path) -> MaskedLM:
    """Trained LoRA (and head) weights from a checkpoint into a freshly built model."""
    loaded = model.load_state_dict(
        load_file(str(Path(checkpoint_dir) / LATEST_WEIGHTS)), strict=False
    )
    if loaded.unexpected_keys:
        raise RuntimeError(f"checkpoint has unexpected weights: {loaded.unexpected_keys[:5]}")
    return model


def run_dapt_loop(config: DaptConfig, session: Session, batches: BatchSource) -> dict[str, Any]:
    """Train to `max_steps`; returns the final state (counters and report history)."""
    set_torch_threads(config.threads_per_worker, config.workers)
    device = session.device()
    use_cuda = device.type == "cuda"
    tokenizer = load_tokenizer(resolve_backbone(config.backbone))
    model = build_initial_model(config, gradient_checkpointing=use_cuda)
    state: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "tokens_seen": 0,
        "masked_tokens": 0,
        "train_seconds": 0.0,
        "history": [],
    }
    optimizer_state = None
    with session.restored_checkpoint() as checkpoint_dir:
        if checkpoint_dir is not None:
            state = json.loads((checkpoint_dir / STATE_FILE).read_text())
            load_trainable(model, checkpoint_dir)
            optimizer_state = torch.load(checkpoint_dir / OPTIMIZER_FILE, weights_only=False)
            log.info("resuming DAPT at step %d of %d", state["step"], config.max_steps)
    model.to(device)
    model = session.prepare_model(model)
    optimizer = adamw(model, config.learning_rate, config.weight_decay)
    scheduler = warmup_cosine(optimizer, config.effective_warmup_steps, config.max_steps)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state["optimizer"])
        scheduler.load_state_dict(optimizer_state["scheduler"])
    # Different masks on every worker, and after a resume.
    collator = make_collator(
        tokenizer, config.mlm_probability, config.seed + 1009 * session.rank + state["step"]
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_cuda)
    # Counters since the last report, summed over workers when reporting. The clock starts
    # with the first batch, once Ray Data's pipeline is up, so tokens/s measures training.
    window = {"loss_sum": 0.0, "masked": 0, "tokens": 0}
    window_started = last_progress = 0.0
    micro_step = 0
    model.train()

    while state["step"] < config.max_steps:
        produced = 0
        for texts in batches(state["epoch"]):
            produced += 1
            if not window_started:
                window_started = last_progress = time.perf_counter()
            batch = mask_batch(collator, tokenizer, texts, config.seq_len)
            last_micro = (micro_step + 1) % config.grad_accum == 0
            # DDP averages gradients only on the micro-step that completes an optimizer step.
            sync = (
                contextlib.nullcontext()
                if last_micro or not hasattr(model, "no_sync")
                else model.no_sync()
            )
            with sync:
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_cuda):
                    loss_sum, masked = model(
                        batch["input_ids"].to(device),
                        batch["attention_mask"].to(device),
                        batch["labels"].to(device),
                    )
                loss = loss_sum / masked.clamp(min=1) / config.grad_accum
                scaler.scale(loss).backward()
            window["loss_sum"] += float(loss_sum.detach())
            window["masked"] += int(masked)
            window["tokens"] += int(batch["attention_mask"].sum())
            micro_step += 1
            if not last_micro:
                continue
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            step = state["step"]
            now = time.perf_counter()
            if session.rank == 0 and now - last_progress > PROGRESS_SECONDS:
                last_progress = now
                log.info(
                    "DAPT step %d/%d: loss %.4f, %.0f tokens/s on this worker",
                    step,
                    config.max_steps,
                    window["loss_sum"] / max(1, window["masked"]),
                    window["tokens"] / (now - window_started),
                )
            if step % config.checkpoint_every == 0 or step == config.max_steps:
                _report(session, model, optimizer, scheduler, state, window, window_started)
                window = {"loss_sum": 0.0, "masked": 0, "tokens": 0}
                window_started = time.perf_counter()
            if step >= config.max_steps:
                break
        if produced == 0:
            raise CorpusError(
                f"{config.corpus}: a worker's shard holds fewer than one batch of "
                f"{config.batch_size // session.world_size} passages; lower --batch-size or "
                "--workers, or use a larger corpus"
            )
        if state["step"] < config.max_steps:
            state["epoch"] += 1
    return state


def _report(session, model, optimizer, scheduler, state, window, window_started) -> None:
    """Sum the window over workers, update the counters and report them with a checkpoint."""
    seconds = time.perf_counter() - window_started
    totals = session.all_gather((window["loss_sum"], window["masked"], window["tokens"]))
    loss_sum = sum(t[0] for t in totals)
    masked = sum(t[1] for t in totals)
    tokens = sum(t[2] for t in totals)
    state["tokens_seen"] += tokens
    state["masked_tokens"] += masked
    state["train_seconds"] += seconds
    metrics = {
        "step": state["step"],
        "epoch": state["epoch"],
        "train_loss": loss_sum / max(1, masked),
        "learning_rate": scheduler.get_last_lr()[0],
        "tokens_seen": state["tokens_seen"],
        "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
        "train_seconds": round(state["train_seconds"], 2),
    }
    state["history"].append(metrics)
    weights = trainable_state(unwrap_ddp(model))
    snapshot = json.loads(json.dumps(state))
    optimizer_snapshot = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}

    def write_checkpoint(directory: Path) -> None:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(directory / LATEST_WEIGHTS))
        torch.save(optimizer_snapshot, directory / OPTIMIZER_FILE)
        (directory / STATE_FILE).write_text(json.dumps(snapshot, indent=2))

    session.report(metrics, write_checkpoint)
    if session.rank == 0:
        log.info(
            "DAPT step %d: loss %.4f, %d tokens seen, %.0f tokens/s",
            metrics["step"],
            metrics["train_loss"],
            metrics["tokens_seen"],
            metrics["tokens_per_second"],
        )


def ray_dapt_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point for TorchTrainer workers: batches come from this worker's Ray Data shard."""
    import ray.train

    from openmed_ray.train.session import RayTrainSession

    logging.basicConfig(level=logging.INFO)
    dapt_config = DaptConfig.from_dict(config)
    session = RayTrainSession()
    shard = ray.train.get_dataset_shard("train")
    micro_batch = dapt_config.batch_size // session.world_size

    def batches(epoch: int) -> Iterable[list[str]]:
        for batch in shard.iter_batches(
            batch_size=micro_batch,
            batch_format="numpy",
            drop_last=True,  # equal shards and full batches: every worker steps in lockstep
            local_shuffle_buffer_size=4 * micro_batch,
            local_shuffle_seed=dapt_config.seed + epoch,
        ):
            # Null texts become empty sequences rather than skipped steps (DDP needs lockstep).
            yield [t if isinstance(t, str) else "" for t in batch[dapt_config.text_column]]

    run_dapt_loop(dapt_config, session, batches)
