"""A Ray Tune sweep: OptunaSearch (TPE) proposes, ASHA prunes on dev F1, and every trial runs
the one fine-tuning loop. Then one final training of the best point and a single test
evaluation; the test split never influences a choice."""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from openmed_ray.config import FinetuneConfig, SweepConfig
from openmed_ray.errors import OpenMedError
from openmed_ray.hpo.ledger import (
    METRIC,
    Ledger,
    open_ledger,
    read_ledger,
    searched_params,
    trial_row,
)
from openmed_ray.hpo.space import final_config, trial_config, tune_param_space
from openmed_ray.io.claim import Claim, acquire_claim
from openmed_ray.io.filesystem import is_remote, join, resolve, write_bytes_atomic
from openmed_ray.models.bundle import update_card
from openmed_ray.runtime import ensure_ray, require_resources
from openmed_ray.train.common import worker_config
from openmed_ray.train.finetune import finetune, preflight

log = logging.getLogger(__name__)

EXPERIMENT = "sweep"
SWEEP_FILE = "sweep.json"


def run_trial(params: dict[str, Any], base: dict[str, Any]) -> None:
    """One Tune trial: the fine-tuning loop at a sampled point, reporting dev F1 each epoch."""
    from openmed_ray.train.loop import run_finetune_loop
    from openmed_ray.train.session import RayTuneSession

    logging.basicConfig(level=logging.INFO)
    run_finetune_loop(trial_config(FinetuneConfig.from_dict(base), params), RayTuneSession())


def trial_base(config: SweepConfig) -> FinetuneConfig:
    """What every trial shares: one process per trial, threads matching its CPUs, and the
    sweep's seed (so the final training repeats the best trial's run)."""
    return config.finetune.replace(
        seed=config.seed,
        workers=1,
        cpus_per_worker=config.cpus_per_trial,
        gpus_per_worker=config.gpus_per_trial,
        threads_per_worker=max(1, int(config.cpus_per_trial)),
        resume=False,
    )


def check_sweep_resources(config: SweepConfig) -> None:
    """A trial that can never be placed, or concurrency beyond the cluster, fails up front."""
    require_resources(
        1,
        config.cpus_per_trial,
        config.gpus_per_trial,
        "trial",
        "lower --cpus-per-trial/--gpus-per-trial",
    )
    require_resources(
        config.concurrency,
        config.cpus_per_trial,
        config.gpus_per_trial,
        "concurrent trial",
        "lower --concurrency (or the per-trial resources)",
    )


def _storage(config: SweepConfig) -> tuple[Any, str]:
    """(pyarrow filesystem or None, path) for Tune's storage; S3 honours AWS_ENDPOINT_URL."""
    uri = config.storage_uri
    if is_remote(uri):
        return resolve(uri)
    return None, str(Path(uri).expanduser().resolve())


def make_tuner(config: SweepConfig, base: FinetuneConfig, ledger: Ledger):
    """The interrupted Tuner restored; else a new one that replays the ledger's trials into
    TPE and runs the ones still missing; None when the ledger already holds them all.
    Finished trials are never rerun."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from openmed_ray.hpo.tune_hooks import LedgerCallback, ReplayingOptunaSearch

    filesystem, storage_path = _storage(config)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=worker_config(base)),
        {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial},
    )
    experiment = join(storage_path, EXPERIMENT)
    if tune.Tuner.can_restore(experiment, storage_filesystem=filesystem):
        if not config.resume:
            raise OpenMedError(
                f"{join(config.storage_uri, EXPERIMENT)} already holds a sweep; pass --resume to "
                "continue it, or choose another --output/--storage"
            )
        log.info("resuming the sweep in %s", experiment)
        return tune.Tuner.restore(
            experiment,
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=filesystem,
        )
    remaining = config.trials - len(ledger.trials)
    if remaining <= 0:
        log.info("%s holds all %d trials; no search left to run", ledger.uri, config.trials)
        return None
    if ledger.trials:
        log.info("replaying %d trials from %s into TPE", len(ledger.trials), ledger.uri)
    return tune.Tuner(
        trainable,
        param_space=tune_param_space(config.space, base.method),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            # TPE samples its first 10 points at random from a generator seeded here: the
            # same seed after a replay would propose the earlier trials' points again.
            search_alg=ReplayingOptunaSearch(
                replay=ledger.trials, seed=config.seed + len(ledger.trials)
            ),
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                max_t=base.epochs,
                grace_period=config.grace_period,
                reduction_factor=config.reduction_factor,
            ),
            num_samples=remaining,
            max_concurrent_trials=config.concurrency,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # A trial whose worker dies restarts from its last epoch checkpoint.
            failure_config=tune.FailureConfig(max_failures=config.trial_retries),
            callbacks=[LedgerCallback(ledger, base.epochs)],
        ),
    )


def trial_record(result, max_epochs: int) -> dict[str, Any]:
    """One trial of Tune's result grid as a ledger row."""
    metrics = result.metrics or {}
    frame = result.metrics_dataframe
    history = frame[METRIC].tolist() if frame is not None and METRIC in frame else []
    return trial_row(
        metrics.get("trial_id") or Path(result.path).name,
        searched_params(result.config),
        history,
        seconds=metrics.get("time_total_s", 0.0),
        stopped_early=bool(metrics.get("stopped_early")),
        error=None if result.error is None else str(result.error),
        max_epochs=max_epochs,
    )


def run_sweep(config: SweepConfig) -> dict[str, Any]:
    """Search, retrain the best point once with the fixed seed, test once; write the report."""
    base = trial_base(config)
    preflight(base)
    ensure_ray()
    check_sweep_resources(config)
    # One sweep per storage: Tune's experiment state and the final training are the outputs
    # two concurrent runs would corrupt. --resume takes over from a sweep that is gone.
    run_id = uuid.uuid4().hex[:8]
    with acquire_claim(
        config.storage_uri, run_id, purpose="tune", takeover=config.resume, config=config.claim
    ) as claim:
        return _search_and_train(config, base, claim)


def _search_and_train(config: SweepConfig, base: FinetuneConfig, claim: Claim) -> dict[str, Any]:
    from openmed_ray.hpo.report import write_report

    output = Path(config.output).expanduser().resolve()
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    ledger = open_ledger(config.ledger_uri, config)
    replayed = len(ledger.trials)
    tuner = make_tuner(config, base, ledger)
    grid = tuner.fit() if tuner is not None else []
    search_seconds = time.perf_counter() - started
    # Every trial of every session: the ledger (its callback wrote this run's too), with the
    # result grid's full per-epoch history on top.
    ledger = read_ledger(ledger.uri) or ledger
    trials = ledger.merged([trial_record(r, base.epochs) for r in grid])
    scored = [t for t in trials if t["dev_f1"] is not None]
    if not scored:
        errors = "; ".join(f"{t['trial_id']}: {t['error']}" for t in trials if t["error"])
        raise OpenMedError(f"no trial finished an epoch, so there is nothing to choose: {errors}")
    best = max(scored, key=lambda t: t["dev_f1"])
    log.info("best trial %s: dev F1 %.4f %s", best["trial_id"], best["dev_f1"], best["params"])

    final = _final_training(
        final_config(config, best["params"], str(output / "final")), config.resume
    )
    provenance = {
        "sweep_id": ledger.sweep_id,
        "ledger": ledger.uri,
        "trials": len(trials),
        "best_trial": best["trial_id"],
        "best_dev_f1": best["dev_f1"],
        "search": "Optuna TPE + ASHA on dev F1",
        "space": config.space.to_dict(),
        "max_epochs_per_trial": base.epochs,
        "max_train_sentences": base.max_train_sentences,
        "final_max_train_sentences": config.final_train_sentences,  # None: all
        "final_epochs": final["epochs_trained"],
        "final_best_epoch": final.get("best_epoch"),
    }
    update_card(final["bundle"], sweep=provenance)
    summary = {
        "dataset": final["dataset"],
        "backbone": config.finetune.backbone,
        "method": final["method_label"],
        "protocol": "search on train/dev only; one final training (fixed seed) and one test evaluation",
        "trials_requested": config.trials,
        "concurrency": config.concurrency,
        "sweep_id": ledger.sweep_id,
        "ledger": ledger.uri,
        "trials_replayed": replayed,
        "search_seconds": round(search_seconds, 1),
        "trials_run": len(trials) - replayed,
        "trials_per_hour": round((len(trials) - replayed) / search_seconds * 3600, 2),
        "space": config.space.to_dict(),
        "max_epochs": base.epochs,
        "trials": trials,
        "best": best,
        "final": {
            "bundle": final["bundle"],
            "params": best["params"],
            "seed": config.seed,
            "epochs": final["epochs_trained"],
            "dev": final["metrics"]["dev"],
            "test": final["metrics"]["test"],
        },
        "config": config.to_dict(),
        "claim": claim.describe(),
    }
    write_report(summary, output)
    if is_remote(config.storage_uri):
        write_bytes_atomic(
            json.dumps(summary, indent=2).encode(), join(config.storage_uri, SWEEP_FILE)
        )
    return summary


def _final_training(config: FinetuneConfig, resume: bool) -> dict[str, Any]:
    """Train the chosen point once; a resumed sweep reuses a final run that already finished."""
    card_path = Path(config.output) / "finetune.json"
    if resume and card_path.is_file():
        return json.loads(card_path.read_text())
    has_run = (Path(config.output) / "ray").exists()
    result = finetune(config.replace(resume=resume and has_run))
    return json.loads((result.output / "finetune.json").read_text())
