"""1 versus 2 Ray Train workers: the same recipe must reach the same quality (within 1 pp).

    python benchmarks/train_workers.py [--dataset NCBI-disease --max-train-sentences 2000
                                        --epochs 3] [--json OUT.json]

Baseline: 1 worker with 2 threads. Compared: 2 DDP workers (gloo) with 1 thread each and the
same global batch, so each worker takes half of every batch and gradients are averaged.
Both runs use the same seed, data cap and all-linear LoRA configuration as the shipped
adapters. Reports dev and test F1, seconds per epoch, and the F1 differences.
Writes benchmarks/results/train_workers.{json,png}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from benchmarks.common import RESULTS, write_results  # noqa: E402
from openmed_ray.config import FinetuneConfig  # noqa: E402

TOLERANCE_PP = 1.0


def train(args, workers: int, output: Path) -> dict:
    from openmed_ray.train.finetune import finetune

    config = FinetuneConfig.from_dict(
        {
            "dataset": args.dataset,
            "backbone": "minilm",
            "output": str(output),
            "method": "lora",
            "learning_rate": 1e-3,
            "lora": {"targets": ["all-linear"], "dropout": 0.0},
            "epochs": args.epochs,
            "max_train_sentences": args.max_train_sentences,
            "workers": workers,
            "cpus_per_worker": 2 / workers,
            "threads_per_worker": 2 // workers,
            "seed": args.seed,
        }
    )
    card = finetune(config, name=f"{workers}-workers").card
    return {
        "workers": workers,
        "threads_per_worker": 2 // workers,
        "dev_f1": round(card["metrics"]["dev"]["f1"], 4),
        "test_f1": round(card["metrics"]["test"]["f1"], 4),
        "epochs": card["epochs_trained"],
        "seconds_per_epoch": card["seconds_per_epoch"],
        "train_seconds": card["train_seconds"],
        "dev_f1_by_epoch": [round(h["dev_f1"], 4) for h in card["history"]],
    }


def chart(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [payload["one_worker"], payload["two_workers"]]
    labels = ["1 worker x 2 threads", "2 workers x 1 thread"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for run, label in zip(runs, labels, strict=True):
        left.plot(
            range(1, len(run["dev_f1_by_epoch"]) + 1), run["dev_f1_by_epoch"], "o-", label=label
        )
    left.set_xlabel("epoch")
    left.set_ylabel("dev micro-F1")
    left.legend()
    right.bar(labels, [r["seconds_per_epoch"] for r in runs], color=["grey", "C0"])
    right.set_ylabel("seconds per epoch")
    fig.suptitle(f"{payload['dataset']} (first {payload['max_train_sentences']} sentences), MiniLM")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="NCBI-disease")
    parser.add_argument("--max-train-sentences", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS / "train_workers.json")
    args = parser.parse_args(argv)

    from openmed_ray.runtime import ensure_ray

    ensure_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    workdir = Path(tempfile.mkdtemp(prefix="train-workers-"))
    one = train(args, 1, workdir / "one")
    two = train(args, 2, workdir / "two")
    payload = {
        "dataset": args.dataset,
        "max_train_sentences": args.max_train_sentences,
        "baseline": "one_worker",
        "one_worker": one,
        "two_workers": two,
        "dev_f1_difference_pp": round(100 * (two["dev_f1"] - one["dev_f1"]), 2),
        "test_f1_difference_pp": round(100 * (two["test_f1"] - one["test_f1"]), 2),
        "tolerance_pp": TOLERANCE_PP,
    }
    payload["within_tolerance"] = abs(payload["test_f1_difference_pp"]) <= TOLERANCE_PP
    write_results(payload, args.json, "train_workers", lambda path: chart(payload, path))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
