"""One multi-type bundle against four single-type adapters: throughput and test F1.

    python benchmarks/multitype.py --docs 400 --bundle all-types

Baseline: the shipped single-type adapters chemical, disease, gene and species requested
together (`--adapters chemical,disease,gene,species`: four encoder passes per window).
System: the multi-type bundle (one encoder pass, four heads). Both run in-process on the
first N PMC-OA abstracts of ../shared/data/corpora, in FP32 and int8, timed after a warm-up;
wordpieces/s count the documents' content wordpieces (the same number for both).

Test F1 per dataset (seqeval default mode, the engine's FP32 model): the multi-type head on
its dataset against the single adapter, the difference in points, and its two-sided
approximate-randomization p-value. `auto_precision` is what `--precision auto` picks for the
bundle on this CPU, and why.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.annotate_throughput import content_wordpieces, load_abstracts, run_engine  # noqa: E402
from benchmarks.common import RESULTS, write_results  # noqa: E402

SEPARATE = {
    "chemical": "BC5CDR-chem",
    "disease": "BC5CDR-disease",
    "gene": "BC2GM",
    "species": "linnaeus",
}
BAR_SPEEDUP = 3.0
BAR_F1_DELTA_PP = -1.0


def throughput(
    adapters: list[str], texts: list[str], pieces: int, threads: int, precision: str
) -> dict:
    result, _ = run_engine(adapters, texts, threads, precision)
    return {
        "seconds": round(result["seconds"], 2),
        "entities": result["entities"],
        "wordpieces_per_s": round(pieces / result["seconds"], 1),
        "docs_per_s": round(len(texts) / result["seconds"], 2),
    }


def compare_f1(bundle: str, shuffles: int, limit: int | None) -> dict:
    from openmed_ray.eval.metrics import evaluate
    from openmed_ray.eval.significance import approximate_randomization
    from openmed_ray.train.evaluate import adapter_predictions

    rows = {}
    for single, dataset in SEPARATE.items():
        single_report, gold, single_tags = adapter_predictions(single, dataset)
        multi_report, _, multi_tags = adapter_predictions(bundle, dataset)
        if limit:  # quick checks only: a prefix of the test set
            gold, single_tags, multi_tags = gold[:limit], single_tags[:limit], multi_tags[:limit]
            single_report = evaluate([list(s.tags) for s in gold], single_tags)
            multi_report = evaluate([list(s.tags) for s in gold], multi_tags)
        test = approximate_randomization(
            [list(s.tags) for s in gold], multi_tags, single_tags, n_shuffles=shuffles
        )
        rows[dataset] = {
            "single_adapter": single,
            "single_f1": round(single_report.f1, 4),
            "multitype_f1": round(multi_report.f1, 4),
            "multitype_precision": round(multi_report.precision, 4),
            "multitype_recall": round(multi_report.recall, 4),
            "delta_pp": round(100 * (multi_report.f1 - single_report.f1), 2),
            "p_value": round(test.p_value, 4),
        }
    return rows


def chart(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    runs = payload["throughput"]
    names = list(runs)
    bars = left.bar(names, [runs[n]["wordpieces_per_s"] for n in names], color=["grey", "C0"] * 2)
    left.bar_label(bars, fmt="%.0f")
    left.tick_params(axis="x", labelrotation=20)
    left.set_ylabel("content wordpieces / s (4 entity types)")
    left.set_title(f"{payload['docs']} PMC-OA abstracts, 2 CPU cores")
    rows = payload["f1_by_dataset"]
    deltas = [rows[d]["delta_pp"] for d in rows]
    bars = right.bar(
        list(rows), deltas, color=["C2" if d >= BAR_F1_DELTA_PP else "C3" for d in deltas]
    )
    right.bar_label(bars, fmt="%+.2f")
    right.axhline(BAR_F1_DELTA_PP, color="C3", linestyle="--", linewidth=1, label="bar: -1.0 pp")
    right.axhline(0, color="black", linewidth=0.8)
    right.set_ylabel("test F1, multi-type minus single adapter (pp)")
    right.set_title("F1 cost of sharing one encoder")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--bundle", default="all-types", help="the multi-type bundle")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shuffles", type=int, default=2000)
    parser.add_argument("--test-sentences", type=int, help="cap each test set (quick checks)")
    parser.add_argument("--json", type=Path, default=RESULTS / "multitype.json")
    args = parser.parse_args(argv)

    from openmed_ray.models.adapters import identify_adapter
    from openmed_ray.models.bundle import load_bundle

    texts = [d["text"] for d in load_abstracts(args.docs)]
    bundle = load_bundle(identify_adapter(args.bundle).path)
    pieces = content_wordpieces(bundle.tokenizer, texts)
    separate = list(SEPARATE)
    runs = {}
    for precision in ("fp32", "int8"):
        runs[f"4 adapters {precision}"] = throughput(
            separate, texts, pieces, args.threads, precision
        )
        runs[f"multi-type {precision}"] = throughput(
            [args.bundle], texts, pieces, args.threads, precision
        )
    speedup = {
        p: round(
            runs[f"multi-type {p}"]["wordpieces_per_s"]
            / runs[f"4 adapters {p}"]["wordpieces_per_s"],
            2,
        )
        for p in ("fp32", "int8")
    }
    rows = compare_f1(args.bundle, args.shuffles, args.test_sentences)
    choice = identify_adapter(args.bundle, "auto")
    payload = {
        "docs": len(texts),
        "wordpieces": pieces,
        "threads": args.threads,
        "baseline": f"single-type adapters {', '.join(separate)} in one request (4 passes)",
        "bundle": args.bundle,
        "bundle_version": bundle.version,
        "throughput": runs,
        "speedup_vs_separate": speedup["fp32"],
        "speedup_vs_separate_int8": speedup["int8"],
        "f1_by_dataset": rows,
        "f1_delta_by_dataset": {d: r["delta_pp"] for d, r in rows.items()},
        "min_f1_delta": min(r["delta_pp"] for r in rows.values()),
        "auto_precision": {"precision": choice.precision, "reason": choice.precision_reason},
        "bars": {
            "speedup_vs_separate": f">= {BAR_SPEEDUP}",
            "min_f1_delta": f">= {BAR_F1_DELTA_PP} pp",
            "met": speedup["fp32"] >= BAR_SPEEDUP
            and min(r["delta_pp"] for r in rows.values()) >= BAR_F1_DELTA_PP,
        },
        "test_sentences_cap": args.test_sentences,
    }
    write_results(payload, args.json, "multitype", lambda path: chart(payload, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
