"""Domain-adaptive pre-training on Ray Train: pre-flight checks, held-out perplexity before,
TorchTrainer over a Ray Data corpus, perplexity after, then the adapter and merged backbone.

OUTPUT/adapter/     the DAPT adapter (standard PEFT: LoRA, plus head layers made for it)
OUTPUT/backbone/    the backbone with the adapter merged, and its tokenizer: fine-tune from it
                    with --backbone OUTPUT/backbone
OUTPUT/ray/dapt/    Ray Train run: checkpoints used by --resume
OUTPUT/dapt.json    config, perplexity before/after, steps, tokens seen, seconds, tokens/s
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmed_ray.config import DaptConfig
from openmed_ray.io.corpus import read_parquet_dataset
from openmed_ray.io.filesystem import resolve, write_bytes_atomic
from openmed_ray.io.passages import CorpusError, count_text_rows, exists, heldout_path, read_texts
from openmed_ray.models.backbones import load_tokenizer, resolve_backbone
from openmed_ray.models.classifier import count_parameters
from openmed_ray.models.masked_lm import MaskedLM, lora_disabled, perplexity
from openmed_ray.runtime import ensure_ray
from openmed_ray.train.common import (
    STATE_FILE,
    check_worker_resources,
    fit_torch_trainer,
    library_versions,
    run_storage,
    worker_config,
)
from openmed_ray.train.mlm_loop import build_initial_model, load_trainable, ray_dapt_loop_per_worker

log = logging.getLogger(__name__)

RUN_NAME = "dapt"
PERPLEXITY_SEED = 0  # the held-out masks; identical before and after training


@dataclass
class DaptResult:
    output: Path
    adapter: Path
    backbone: Path
    summary: dict[str, Any]


def heldout_uri(config: DaptConfig) -> str | None:
    """The explicit held-out corpus, else the one `openmed-ray corpus` wrote beside the corpus."""
    if config.heldout:
        count_text_rows(config.heldout, config.text_column)
        return config.heldout
    sibling = heldout_path(config.corpus)
    return sibling if sibling != config.corpus and exists(sibling) else None


def preflight(config: DaptConfig) -> tuple[int, str | None]:
    """Fail before any Ray work: corpus, text column, size, backbone. (rows, held-out URI)."""
    rows = count_text_rows(config.corpus, config.text_column)
    if rows < config.batch_size:
        raise CorpusError(
            f"{config.corpus}: {rows} passage(s), fewer than one global batch of "
            f"{config.batch_size}; lower --batch-size or use a larger corpus"
        )
    load_tokenizer(resolve_backbone(config.backbone))
    return rows, heldout_uri(config)


def _heldout_perplexity(model: MaskedLM, tokenizer, texts: list[str], config: DaptConfig):
    if not texts:
        return None
    return perplexity(
        model,
        tokenizer,
        texts,
        seq_len=config.seq_len,
        batch_size=config.eval_batch_size,
        mlm_probability=config.mlm_probability,
        seed=PERPLEXITY_SEED,
    )


def _change_pct(before: float | None, after: float | None) -> float | None:
    return round(100 * (after - before) / before, 2) if before and after else None


def dapt(config: DaptConfig) -> DaptResult:
    """Run DAPT on Ray Train and write the adapter, the merged backbone and dapt.json."""
    rows, heldout = preflight(config)
    output = Path(config.output).expanduser().resolve()
    storage = run_storage(output, RUN_NAME, config.resume)
    ensure_ray()
    check_worker_resources(config.workers, config.cpus_per_worker, config.gpus_per_worker)
    backbone_dir = resolve_backbone(config.backbone)
    tokenizer = load_tokenizer(backbone_dir)
    texts = read_texts(heldout, config.text_column, config.eval_passages) if heldout else []
    if not texts:
        log.warning("no held-out passages (%s): perplexity is not measured", heldout or "none")
    started = time.perf_counter()
    model = build_initial_model(config)
    before = _heldout_perplexity(model, tokenizer, texts, config)
    if before is not None:
        log.info("held-out perplexity before DAPT: %.2f", before["perplexity"])

    fs, path = resolve(config.corpus)
    corpus = read_parquet_dataset(path, fs, [config.text_column])
    result = fit_torch_trainer(
        ray_dapt_loop_per_worker,
        worker_config(config),
        workers=config.workers,
        cpus_per_worker=config.cpus_per_worker,
        gpus_per_worker=config.gpus_per_worker,
        storage=storage,
        run_name=RUN_NAME,
        datasets={"train": corpus},
    )
    with result.checkpoint.as_directory() as checkpoint_dir:
        state = json.loads((Path(checkpoint_dir) / STATE_FILE).read_text())
        load_trainable(model, checkpoint_dir)
    after = _heldout_perplexity(model, tokenizer, texts, config)
    head_only = None
    if model.initialised_head and model.is_lora:
        with lora_disabled(model):
            head_only = _heldout_perplexity(model, tokenizer, texts, config)
    trainable, total = count_parameters(model)
    adapter_dir, merged_dir = output / "adapter", output / "backbone"
    model.save_adapter(adapter_dir)
    model.save_merged(merged_dir, tokenizer)
    wall_seconds = time.perf_counter() - started

    def value(report):
        return None if report is None else round(report["perplexity"], 3)

    ppl_before, ppl_after = value(before), value(after)
    summary = {
        "config": config.to_dict(),
        "backbone": str(backbone_dir),
        "corpus_passages": rows,
        "heldout": heldout,
        "heldout_passages": len(texts),
        "perplexity_before": ppl_before,
        "perplexity_after": ppl_after,
        "perplexity_change_pct": _change_pct(ppl_before, ppl_after),
        # With a head made for DAPT, 'before' is an untrained head; the trained head on the
        # original encoder isolates what the encoder itself gained.
        "perplexity_head_only": value(head_only),
        "perplexity_change_vs_head_only_pct": _change_pct(value(head_only), ppl_after),
        "heldout_masked_tokens": None if after is None else after["masked_tokens"],
        "steps": state["step"],
        "epochs": state["epoch"],
        "tokens_seen": state["tokens_seen"],
        "masked_tokens_seen": state["masked_tokens"],
        "train_seconds": round(state["train_seconds"], 1),
        "tokens_per_second": round(state["tokens_seen"] / max(state["train_seconds"], 1e-9), 1),
        "wall_seconds": round(wall_seconds, 1),
        "warmup_steps": config.effective_warmup_steps,
        "global_batch": config.batch_size * config.grad_accum,
        "head_initialised": model.initialised_head,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "history": state["history"],
        "adapter": str(adapter_dir),
        "merged_backbone": str(merged_dir),
        "versions": library_versions(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_bytes_atomic(json.dumps(summary, indent=2).encode(), output / "dapt.json")
    log.info(
        "DAPT: %d steps, %d tokens (%.0f tokens/s); held-out perplexity %s -> %s; backbone %s",
        summary["steps"],
        summary["tokens_seen"],
        summary["tokens_per_second"],
        ppl_before,
        ppl_after,
        merged_dir,
    )
    return DaptResult(output, adapter_dir, merged_dir, summary)
