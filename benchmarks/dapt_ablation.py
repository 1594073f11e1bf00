"""DAPT ablation: does masked-LM pre-training on PMC-OA help MiniLM's NER?

    python benchmarks/dapt_ablation.py [--max-steps 280 --batch-size 32 --lr 1e-3]
        [--dapt-lora-targets query,value --dapt-lora-rank 16] [--recipe fixed|shipped]
        [--datasets NCBI-disease,BC5CDR-chem --epochs 3 --max-train-sentences N]
        [--max-docs N --work DIR --name dapt_ablation] [--json OUT.json]

The full-corpus run (issue 18): `--max-steps 0` (one pass over every training passage)
`--dapt-lora-targets all-linear --recipe shipped --name dapt_full`. It takes hours on 2 cores:
rerun the same command after an interruption and DAPT continues from its last checkpoint.

1. Corpus: the PMC-OA RCT texts, CC0/CC-BY only, benchmark dev/test PMIDs removed, as
   50-256-wordpiece passages with a 2% held-out split (`openmed-ray corpus`).
2. DAPT: MiniLM + LoRA r16 on query/value (the paper's recipe; `--dapt-lora-targets
   all-linear` adapts every linear layer; MiniLM's checkpoint has no MLM head, so one is made
   from its tied embeddings) on Ray Train + Ray Data, `max_steps` x `batch_size` passages
   (280 x 32 is about 2M wordpieces; 0 steps: the whole corpus once).
3. Held-out perplexity before and after, against the paper's reductions (DeBERTa-v3 -22.5%,
   PubMedBERT -18%).
4. Baseline: fine-tuning MiniLM itself; compared: fine-tuning the DAPT backbone. Same
   recipe, seed and data on every dataset; test micro-F1 difference and its
   approximate-randomization p-value. `--recipe fixed`: all-linear LoRA r16, lr 1e-3,
   dropout 0, `--epochs` on both. `--recipe shipped`: the HPO-chosen recipe of the dataset's
   shipped adapter (its card's hyperparameters and epochs); the baseline is that shipped
   adapter itself, which is MiniLM trained with exactly that recipe and seed.

Work files live in benchmarks/cache/dapt_ablation/ (not committed); `--work` moves them.
Writes benchmarks/results/NAME.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from benchmarks.common import write_results  # noqa: E402
from openmed_ray.config import (  # noqa: E402
    CorpusConfig,
    DaptConfig,
    FinetuneConfig,
    LoraConfig,
    resolve_data_root,
)

PAPER_PERPLEXITY_CHANGE_PCT = {"DeBERTa-v3": -22.5, "PubMedBERT": -18.0}
FINETUNE_RECIPE = {
    "method": "lora",
    "learning_rate": 1e-3,
    "lora": {"targets": ["all-linear"], "dropout": 0.0},
}


def prepare_corpus(args, work: Path) -> dict:
    """Build the passage corpus, or reuse one built with the same settings."""
    from openmed_ray.io.passages import stats_path
    from openmed_ray.train.corpus import build_corpus

    config = CorpusConfig(
        source=str(resolve_data_root() / "corpora" / "evidence-inference-pmcoa"),
        output=str(work / "corpus" / "pmcoa.parquet"),
        license_filter=("cc0", "cc-by"),
        max_docs=args.max_docs,
    )
    stats_file = Path(stats_path(config.output))
    if stats_file.is_file():
        stats = json.loads(stats_file.read_text())
        if (stats.get("license_filter"), stats.get("max_docs")) == (
            list(config.license_filter),
            config.max_docs,
        ):
            return stats
    return build_corpus(config)


# Settings that only decide how fast a run goes; a finished run with the same other settings
# is reused, so an interrupted benchmark restarts where it stopped.
SPEED_ONLY = {"threads_per_worker", "cpus_per_worker", "output", "resume"}


def finished_run(summary_file: Path, config: dict) -> dict | None:
    """The summary of a finished run with the same settings (speed settings aside), or None."""
    if not summary_file.is_file():
        return None
    summary = json.loads(summary_file.read_text())
    recorded = {k: v for k, v in summary.get("config", {}).items() if k not in SPEED_ONLY}
    wanted = {k: v for k, v in config.items() if k not in SPEED_ONLY}
    # Through JSON so tuples compare equal to the lists the summary file holds.
    if recorded != json.loads(json.dumps(wanted)):
        return None
    logging.getLogger(__name__).info("reusing the finished run in %s", summary_file.parent)
    return summary


def dapt_steps(args, corpus: dict) -> int:
    """`--max-steps`, or with 0 one pass over every training passage."""
    return args.max_steps or -(-corpus["passages"]["train"] // args.batch_size)


def continues(output: Path, config: dict) -> bool:
    """Whether `output` holds an unfinished Ray Train run of `config` to resume; otherwise it
    is emptied and records `config` as the run started there."""
    request = output / "request.json"
    if request.is_file() and finished_run(request, config) is not None:
        return (output / "ray").exists()
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    request.write_text(json.dumps({"config": config}, indent=2))
    return False


def run_dapt(args, corpus: dict, work: Path) -> dict:
    """DAPT, reusing a finished run with the same settings and continuing an unfinished one
    from its last checkpoint (a full-corpus run outlasts a session)."""
    from openmed_ray.train.dapt import dapt

    output = work / "dapt"
    steps = dapt_steps(args, corpus)
    config = DaptConfig(
        corpus=corpus["output"],
        backbone="minilm",
        output=str(output),
        lora=LoraConfig(
            rank=args.dapt_lora_rank,
            alpha=2 * args.dapt_lora_rank,
            targets=tuple(args.dapt_lora_targets.split(",")),
        ),
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_steps=steps,
        # At most 100 steps (about 20 minutes on 2 cores) lost to an interruption.
        checkpoint_every=max(1, min(100, steps // 5)),
        eval_passages=args.eval_passages,
        workers=1,
        cpus_per_worker=1,  # the other CPU reads the corpus (Ray Data)
        threads_per_worker=args.threads,
        seed=args.seed,
    )
    reused = finished_run(output / "dapt.json", config.to_dict())
    if reused is not None:
        return reused
    return dapt(config.replace(resume=continues(output, config.to_dict()))).summary


def shipped_dir(dataset: str) -> Path:
    """The bundle of the adapter shipped for `dataset`."""
    from openmed_ray.models.catalog import SHIPPED_DIR, adapter_name_for

    return SHIPPED_DIR / adapter_name_for(dataset)


def shipped_card(dataset: str) -> dict:
    from openmed_ray.models.bundle import read_card

    return read_card(shipped_dir(dataset))


def finetune_config(args, dataset: str, backbone: str, output: Path) -> FinetuneConfig:
    """The recipe both arms share: fixed, or the shipped adapter's HPO-chosen one."""
    speed = {"workers": 1, "cpus_per_worker": 1, "threads_per_worker": args.threads}
    if args.recipe == "shipped":
        chosen = shipped_card(dataset)["hyperparameters"]
        return FinetuneConfig.from_dict(
            {**chosen, **speed, "backbone": backbone, "output": str(output)}
        )
    return FinetuneConfig.from_dict(
        {
            "dataset": dataset,
            "backbone": backbone,
            "output": str(output),
            "epochs": args.epochs,
            "max_train_sentences": args.max_train_sentences,
            "seed": args.seed,
            **speed,
            **FINETUNE_RECIPE,
        }
    )


def finetune_and_predict(args, dataset: str, backbone: str, output: Path) -> dict:
    """Fine-tune with the shared recipe (continuing an interrupted run); test predictions of
    the kept (best dev) adapter."""
    from openmed_ray.train.finetune import finetune

    config = finetune_config(args, dataset, backbone, output)
    card = finished_run(output / "finetune.json", config.to_dict())
    if card is None:
        resume = continues(output, config.to_dict())
        result = finetune(config.replace(resume=resume), name=f"{dataset.lower()}-{output.name}")
        card = json.loads((result.output / "finetune.json").read_text())
    return predict_test(dataset, card["bundle"], card)


def predict_test(dataset: str, bundle_dir: str | Path, card: dict) -> dict:
    from openmed_ray.datasets import require_dataset
    from openmed_ray.eval.metrics import evaluate
    from openmed_ray.models.bundle import load_bundle
    from openmed_ray.train.evaluate import predict_sentences

    bundle = load_bundle(bundle_dir)
    test = require_dataset(dataset).load("test")
    predicted = predict_sentences(bundle.model, bundle.tokenizer, bundle.labels, test)
    report = evaluate([list(s.tags) for s in test], predicted)
    return {
        "gold": [list(s.tags) for s in test],
        "predicted": predicted,
        "test_f1": report.f1,
        "dev_f1": card["metrics"]["dev"]["f1"],
        "epochs": card["epochs_trained"],
        "train_seconds": card["train_seconds"],
    }


def baseline(args, dataset: str, work: Path) -> dict:
    """MiniLM without DAPT: trained here (fixed recipe), or the shipped adapter (its recipe)."""
    if args.recipe == "shipped":
        return predict_test(dataset, shipped_dir(dataset), shipped_card(dataset))
    return finetune_and_predict(args, dataset, "minilm", work / "finetune" / dataset / "base")


def compare(args, dataset: str, merged_backbone: str, work: Path) -> dict:
    from openmed_ray.eval.significance import approximate_randomization

    without = baseline(args, dataset, work)
    with_dapt = finetune_and_predict(
        args, dataset, merged_backbone, work / "finetune" / dataset / "dapt"
    )
    test = approximate_randomization(
        without["gold"], with_dapt["predicted"], without["predicted"], n_shuffles=args.shuffles
    )
    return {
        "f1_without_dapt": round(without["test_f1"], 4),
        "f1_with_dapt": round(with_dapt["test_f1"], 4),
        "delta_pp": round(100 * (with_dapt["test_f1"] - without["test_f1"]), 2),
        "p_value": round(test.p_value, 4),
        "dev_f1_without_dapt": round(without["dev_f1"], 4),
        "dev_f1_with_dapt": round(with_dapt["dev_f1"], 4),
        "epochs": without["epochs"],
        "train_seconds_without_dapt": without["train_seconds"],
        "train_seconds_with_dapt": with_dapt["train_seconds"],
    }


def chart(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 4))
    history = payload["dapt"]["history"]
    left.plot([h["tokens_seen"] / 1e6 for h in history], [h["train_loss"] for h in history], "o-")
    left.set_xlabel("wordpieces seen (millions)")
    left.set_ylabel("masked-LM training loss")
    targets = "/".join(payload["settings"]["dapt_lora"]["targets"])
    left.set_title(f"DAPT on PMC-OA (MiniLM, LoRA on {targets})")
    middle.bar(
        ["before\n(untrained head)", "DAPT head,\noriginal encoder", "after DAPT"],
        [
            payload["perplexity_before"],
            payload["perplexity_head_only"],
            payload["perplexity_after"],
        ],
        color=["lightgrey", "grey", "C0"],
    )
    middle.set_yscale("log")
    middle.set_ylabel("held-out perplexity (log)")
    middle.set_title(
        f"encoder gain {payload['perplexity_change_vs_head_only_pct']:+.1f}% "
        "(paper: -18% to -22.5%)"
    )
    names = list(payload["datasets"])
    x = range(len(names))
    rows = [payload["datasets"][n] for n in names]
    right.bar([i - 0.2 for i in x], [r["f1_without_dapt"] for r in rows], 0.4, label="MiniLM")
    right.bar([i + 0.2 for i in x], [r["f1_with_dapt"] for r in rows], 0.4, label="+ DAPT")
    for i, r in zip(x, rows, strict=True):
        right.text(i, max(r["f1_without_dapt"], r["f1_with_dapt"]) + 0.01, f"p={r['p_value']}",
                   ha="center")  # fmt: skip
    right.set_xticks(list(x), names)
    right.set_ylabel("test micro-F1")
    right.set_ylim(0, 1)
    right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--max-steps", type=int, default=280, help="DAPT optimizer steps (0: the corpus once)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="DAPT passages per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="DAPT learning rate")
    parser.add_argument("--dapt-lora-targets", default="query,value", help="or all-linear")
    parser.add_argument("--dapt-lora-rank", type=int, default=16, help="alpha is twice it")
    parser.add_argument(
        "--recipe",
        choices=("fixed", "shipped"),
        default="fixed",
        help="fine-tuning: fixed (--epochs), or each shipped adapter's HPO-chosen recipe",
    )
    parser.add_argument("--eval-passages", type=int, default=512)
    parser.add_argument("--max-docs", type=int, help="cap the corpus (documents)")
    parser.add_argument("--datasets", default="NCBI-disease,BC5CDR-chem")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (fixed)")
    parser.add_argument("--max-train-sentences", type=int)
    parser.add_argument("--shuffles", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", type=Path, default=HERE / "cache" / "dapt_ablation")
    parser.add_argument("--name", default="dapt_ablation", help="results/NAME.{json,png}")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from openmed_ray.runtime import ensure_ray

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    load_at_start = os.getloadavg()[0]
    started = time.perf_counter()
    ensure_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    corpus = prepare_corpus(args, args.work)
    dapt_summary = run_dapt(args, corpus, args.work)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    results = {d: compare(args, d, dapt_summary["merged_backbone"], args.work) for d in datasets}
    primary = results[datasets[0]]
    payload = {
        "baseline": (
            "the shipped HPO-chosen adapter: MiniLM without DAPT, same recipe, seed and data"
            if args.recipe == "shipped"
            else "MiniLM fine-tuned without DAPT (same recipe, seed and data)"
        ),
        "primary_dataset": datasets[0],
        "perplexity_before": dapt_summary["perplexity_before"],
        "perplexity_after": dapt_summary["perplexity_after"],
        "perplexity_change_pct": dapt_summary["perplexity_change_pct"],
        # MiniLM's checkpoint has no MLM head, so 'before' is an untrained head. The DAPT head
        # on the original encoder isolates the encoder's own gain, the closer analogue of the
        # paper's figures (their backbones came with trained heads).
        "perplexity_head_only": dapt_summary["perplexity_head_only"],
        "perplexity_change_vs_head_only_pct": dapt_summary["perplexity_change_vs_head_only_pct"],
        "paper_perplexity_change_pct": PAPER_PERPLEXITY_CHANGE_PCT,
        "tokens_seen": dapt_summary["tokens_seen"],
        "dapt_tokens_per_second": dapt_summary["tokens_per_second"],
        "dapt_train_seconds": dapt_summary["train_seconds"],
        "f1_without_dapt": primary["f1_without_dapt"],
        "f1_with_dapt": primary["f1_with_dapt"],
        "p_value": primary["p_value"],
        "datasets": results,
        "corpus": {
            "documents": corpus["documents"],
            "passages": corpus["passages"],
            "tokens": corpus["tokens"],
            "leakage": corpus["leakage"],
        },
        "dapt": {
            k: dapt_summary[k]
            for k in (
                "steps",
                "epochs",
                "global_batch",
                "warmup_steps",
                "heldout_passages",
                "heldout_masked_tokens",
                "head_initialised",
                "trainable_parameters",
                "wall_seconds",
                "history",
            )
        },
        "settings": {
            "max_steps": dapt_steps(args, corpus),
            "batch_size": args.batch_size,
            "dapt_lr": args.lr,
            "dapt_lora": {
                "targets": args.dapt_lora_targets.split(","),
                "rank": args.dapt_lora_rank,
                "alpha": 2 * args.dapt_lora_rank,
                "dropout": 0.05,
            },
            "finetune_recipe": (
                {d: finetune_config(args, d, "minilm", Path()).to_dict() for d in datasets}
                if args.recipe == "shipped"
                else FINETUNE_RECIPE
            ),
            "epochs": args.epochs,
            "max_train_sentences": args.max_train_sentences,
            "seed": args.seed,
            "threads": args.threads,
            "shuffles": args.shuffles,
        },
        "load_average_at_start": round(load_at_start, 2),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    json_path = args.json or HERE / "results" / f"{args.name}.json"
    write_results(payload, json_path, args.name, lambda path: chart(payload, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
