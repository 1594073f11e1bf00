"""spaCy's en_chem_ner against the engine's `chemical` adapter on the BC5CDR test abstracts.

    .venv-spacy/bin/python benchmarks/spacy_vs_transformer.py [--docs 500] [--json OUT.json]

Runs in the spaCy environment (`make test-spacy` builds .venv-spacy): en_chem_ner needs
spaCy 3.7. Both systems annotate the same raw texts (title + abstract from
normalization/BC5CDR/CDR_TestSet.PubTator.txt) through the engine's `Annotator`, one backend
each, in the same run. Scored by character-span exact match against the gold Chemical
mentions (micro P/R/F1; labels ignored, both systems find one type), with docs/s and
characters/s. Baseline: en_chem_ner, the spaCy pipeline users already have.
Writes benchmarks/results/spacy_vs_transformer.{json,png}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.common import RESULTS, write_results  # noqa: E402

SYSTEMS = {"en_chem_ner (spaCy)": "spacy:en_chem_ner", "chemical (MiniLM LoRA)": "chemical"}


def gold_documents(limit: int) -> list:
    from openmed_ray.config import resolve_data_root
    from openmed_ray.io.pubtator import read_pubtator

    path = resolve_data_root() / "normalization" / "BC5CDR" / "CDR_TestSet.PubTator.txt"
    return read_pubtator(path)[:limit]


def score(gold: set, predicted: set) -> dict:
    tp = len(gold & predicted)
    precision = tp / len(predicted) if predicted else 0.0
    recall = tp / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "gold": len(gold),
        "predicted": len(predicted),
    }


def run_system(adapter: str, texts: list[str], threads: int) -> tuple[set, dict]:
    from openmed_ray.annotate.annotator import Annotator

    annotator = Annotator([adapter], threads=threads)
    annotator.annotate(texts[:4])  # warm-up
    started = time.perf_counter()
    results = annotator.annotate(texts)
    seconds = time.perf_counter() - started
    spans = {(i, e.start, e.end) for i, r in enumerate(results) for e in r.entities}
    return spans, {
        "seconds": round(seconds, 2),
        "docs_per_s": round(len(texts) / seconds, 2),
        "chars_per_s": round(sum(map(len, texts)) / seconds, 1),
    }


def chart(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(payload["systems"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for offset, metric in enumerate(("precision", "recall", "f1")):
        left.bar(
            [i + offset * 0.27 for i in range(len(names))],
            [payload["systems"][n][metric] for n in names],
            0.27,
            label=metric,
        )
    left.set_xticks([i + 0.27 for i in range(len(names))], names)
    left.set_ylim(0, 1)
    left.set_title(f"BC5CDR test, {payload['docs']} abstracts: Chemical spans, exact match")
    left.legend()
    right.bar(names, [payload["systems"][n]["docs_per_s"] for n in names], color=["grey", "C0"])
    right.set_ylabel("documents / s (2 CPU threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=RESULTS / "spacy_vs_transformer.json")
    args = parser.parse_args(argv)

    documents = gold_documents(args.docs)
    texts = [d.text for d in documents]
    gold = {
        (i, m.start, m.end)
        for i, d in enumerate(documents)
        for m in d.mentions
        if m.type == "Chemical"
    }
    payload: dict = {
        "docs": len(texts),
        "gold_chemical_mentions": len(gold),
        "baseline": "en_chem_ner (spaCy)",
        "threads": args.threads,
        "systems": {},
    }
    for name, adapter in SYSTEMS.items():
        spans, speed = run_system(adapter, texts, args.threads)
        payload["systems"][name] = {"adapter": adapter, **score(gold, spans), **speed}
    base, ours = (payload["systems"][n] for n in SYSTEMS)
    payload["f1_difference_pp"] = round(100 * (ours["f1"] - base["f1"]), 2)
    payload["speed_ratio_vs_baseline"] = round(ours["docs_per_s"] / base["docs_per_s"], 2)
    write_results(payload, args.json, "spacy_vs_transformer", lambda path: chart(payload, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
