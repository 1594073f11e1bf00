"""A real HPO sweep on this CPU: MiniLM on a capped NCBI-disease, against the default config.

    python benchmarks/hpo_sweep.py [--trials 8 --concurrency 2 --max-train-sentences 1000
                                    --max-epochs 3] [--json OUT.json]

Runs, on one local Ray:
  1. the sweep: `--trials` TPE trials with ASHA at `--concurrency` (1 CPU each), then the
     final training of the best point and one test evaluation;
  2. the same sweep's first trials at concurrency 1 (2 CPUs per trial), for trials/hour;
  3. baseline: the default FinetuneConfig trained by the same loop on the same capped data,
     so what the search gained is measured on dev.
Writes benchmarks/results/hpo_sweep.{json,png} (the sweep's own report stays in the run dir).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from benchmarks.common import RESULTS, write_results  # noqa: E402
from openmed_ray.config import FinetuneConfig, SweepConfig  # noqa: E402


def base_finetune(args) -> dict:
    return {
        "dataset": "NCBI-disease",
        "backbone": "minilm",
        "method": "lora",
        "lora": {"targets": ["all-linear"]},
        "epochs": args.max_epochs,
        "patience": args.max_epochs,
        "max_train_sentences": args.max_train_sentences,
    }


def sweep(args, output: Path, trials: int, concurrency: int, cpus: float) -> dict:
    from openmed_ray.hpo.sweep import run_sweep

    config = SweepConfig.from_dict(
        {
            "finetune": base_finetune(args),
            "output": str(output),
            "trials": trials,
            "concurrency": concurrency,
            "cpus_per_trial": cpus,
            "seed": args.seed,
        }
    )
    return run_sweep(config)


def default_dev_f1(args, output: Path) -> dict:
    """The default configuration through the same loop (no test evaluation)."""
    from openmed_ray.train.loop import run_finetune_loop
    from openmed_ray.train.session import LocalSession

    config = FinetuneConfig.from_dict(
        {**base_finetune(args), "seed": args.seed, "output": str(output), "threads_per_worker": 2}
    )
    started = time.perf_counter()
    state = run_finetune_loop(config, LocalSession(output / "checkpoint"))
    return {
        "dev_f1": round(state["best_dev_f1"], 4),
        "seconds": round(time.perf_counter() - started, 1),
        "learning_rate": config.effective_learning_rate,
        "batch_size": config.batch_size,
        "lora_rank": config.lora.rank,
        "lora_dropout": config.lora.dropout,
    }


def chart(payload: dict, trials: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    xs = [i for i, t in enumerate(trials) if t["dev_f1"] is not None]
    left.scatter(xs, [trials[i]["dev_f1"] for i in xs], label="trial best dev F1")
    left.axhline(payload["default_dev_f1"], color="grey", ls="--", label="default config")
    left.axhline(payload["best_dev_f1"], color="C1", label="best trial")
    left.set_xlabel("trial")
    left.set_ylabel("dev micro-F1")
    left.legend(loc="lower right")
    left.set_title("NCBI-disease (capped), MiniLM all-linear LoRA")
    rates = payload["trials_per_hour"]
    right.bar([f"concurrency {k}" for k in rates], list(rates.values()), color=["grey", "C0"])
    right.set_ylabel("trials per hour")
    right.set_title("throughput on 2 CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--serial-trials", type=int, default=3, help="trials at concurrency 1")
    parser.add_argument("--max-train-sentences", type=int, default=1000)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS / "hpo_sweep.json")
    args = parser.parse_args(argv)

    from openmed_ray.runtime import ensure_ray

    ensure_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    workdir = Path(tempfile.mkdtemp(prefix="hpo-sweep-"))
    started = time.perf_counter()
    default = default_dev_f1(args, workdir / "default")
    main_sweep = sweep(args, workdir / "sweep", args.trials, args.concurrency, 1)
    serial = sweep(args, workdir / "serial", args.serial_trials, 1, 2)
    payload = {
        "dataset": "NCBI-disease",
        "backbone": "minilm",
        "max_train_sentences": args.max_train_sentences,
        "max_epochs": args.max_epochs,
        "trials": len(main_sweep["trials"]),
        "concurrency": args.concurrency,
        "trials_per_hour": {
            "1": serial["trials_per_hour"],
            str(args.concurrency): main_sweep["trials_per_hour"],
        },
        "best_dev_f1": round(main_sweep["best"]["dev_f1"], 4),
        "best_params": main_sweep["best"]["params"],
        "default_dev_f1": default["dev_f1"],
        "default_config": default,
        "dev_f1_gain_over_default": round(main_sweep["best"]["dev_f1"] - default["dev_f1"], 4),
        "final_test_f1": round(main_sweep["final"]["test"]["f1"], 4),
        "final_dev_f1": round(main_sweep["final"]["dev"]["f1"], 4),
        "trial_statuses": [t["status"] for t in main_sweep["trials"]],
        "serial_trial_statuses": [t["status"] for t in serial["trials"]],
        "parameter_importances": main_sweep.get("parameter_importances", {}),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_results(
        payload, args.json, "hpo_sweep", lambda path: chart(payload, main_sweep["trials"], path)
    )
    shutil.copy(workdir / "sweep" / "sweep.md", RESULTS / "hpo_sweep_report.md")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
