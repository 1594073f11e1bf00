"""Knowledge-graph quality on the BC5CDR test set: linking, and edges against CID relations.

    python benchmarks/kg_quality.py --docs 500 --json benchmarks/results/kg_quality.json

1. The first N test abstracts (title + abstract of CDR_TestSet.PubTator.txt) are annotated
   with the shipped `chemical` and `disease` adapters (the in-process Annotator) and written
   as an annotate output; the gold mention spans are written as a second one.
2. `openmed-ray kg`'s pipeline (Ray Data, linking with the train+dev dictionary) builds a
   graph from each, restricted to Chemical-Disease pairs, keeping every doc_id per edge.
3. Every (document, chemical MeSH, disease MeSH) edge instance is scored against the gold
   CID relations of those documents: P/R/F1 at document and sentence level, with predicted
   mentions and with gold mention spans (linked by our linker, not the gold IDs), which
   separates NER errors from linking and co-occurrence errors.
4. Linking accuracy on the gold test mentions with a concept: the share whose linked ID is
   one of the gold IDs.

Baseline in the same run: exact-string dictionary linking only (no case folding,
punctuation forms, abbreviations or TF-IDF), for linking accuracy and document-level CID.
Co-occurrence at document level is itself the classic "every pair in the abstract"
baseline for CID; sentence level is the stricter variant.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pyarrow as pa  # noqa: E402

from benchmarks.common import RESULTS, write_results  # noqa: E402
from openmed_ray.config import KGConfig, LinkerConfig, resolve_data_root  # noqa: E402
from openmed_ray.io.annotations import DOCUMENT_SCHEMA, ENTITY_SCHEMA, write_part  # noqa: E402
from openmed_ray.io.pubtator import PubTatorDocument, read_pubtator, write_texts  # noqa: E402
from openmed_ray.kg.abbreviations import abbreviation_map, find_abbreviations  # noqa: E402
from openmed_ray.kg.linker import Linker, build_linker, entity_type  # noqa: E402
from openmed_ray.kg.normalize import canonical_id  # noqa: E402
from openmed_ray.kg.pipeline import build_graph  # noqa: E402
from openmed_ray.kg.store import load_graph  # noqa: E402
from openmed_ray.text.tokenize import sentence_spans  # noqa: E402

TEST_FILE = "normalization/BC5CDR/CDR_TestSet.PubTator.txt"
EXACT_ONLY = ("exact",)
MESH = "MESH:"
NER_ADAPTERS = ("chemical", "disease")  # the shipped adapters finding the mentions


def load_test_documents(n: int) -> list[PubTatorDocument]:
    return read_pubtator(resolve_data_root() / TEST_FILE)[:n]


def annotate(documents: list[PubTatorDocument], threads: int) -> list[list[dict]]:
    from openmed_ray.annotate.annotator import Annotator

    annotator = Annotator(list(NER_ADAPTERS), threads=threads)
    results = annotator.annotate([d.text for d in documents])
    return [
        [
            {"start": e.start, "end": e.end, "text": e.text, "label": e.label, "score": e.score}
            for e in result.entities
        ]
        for result in results
    ]


def gold_mentions(documents: list[PubTatorDocument]) -> list[list[dict]]:
    return [
        [
            {"start": m.start, "end": m.end, "text": m.text, "label": m.type, "score": 1.0}
            for m in d.mentions
        ]
        for d in documents
    ]


def write_annotate_output(root: Path, documents: list[PubTatorDocument], mentions) -> Path:
    """An annotate output (one partition) with these mentions per document."""
    entities = [
        {"doc_id": d.pmid, **m, "adapter": m["label"].lower(), "adapter_version": "benchmark"}
        for d, found in zip(documents, mentions, strict=True)
        for m in found
    ]
    rows = [
        {
            "doc_id": d.pmid,
            "status": "ok",
            "error": None,
            "n_chars": len(d.text),
            "n_wordpieces": 0,
            "n_entities": len(found),
            "run_id": "benchmark",
        }
        for d, found in zip(documents, mentions, strict=True)
    ]
    write_part(
        str(root / "test"),
        "part-0.parquet",
        pa.Table.from_pylist(entities, schema=ENTITY_SCHEMA),
        pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA),
    )
    return root


def graph_triples(graph: Path, level: str) -> set[tuple[str, str, str]]:
    """(doc_id, chemical MeSH, disease MeSH) for every Chemical-Disease edge instance."""
    nodes, edges = load_graph(graph)
    label = dict(
        zip(nodes.column("node_id").to_pylist(), nodes.column("label").to_pylist(), strict=True)
    )
    triples = set()
    for edge in edges.to_pylist():
        if edge["level"] != level:
            continue
        ends = {label[edge["src"]]: edge["src"], label[edge["dst"]]: edge["dst"]}
        chemical, disease = ends.get("Chemical", ""), ends.get("Disease", "")
        if chemical.startswith(MESH) and disease.startswith(MESH):
            triples.update(
                (doc, chemical[len(MESH) :], disease[len(MESH) :]) for doc in edge["examples"]
            )
    return triples


def gold_triples(documents: list[PubTatorDocument]) -> set[tuple[str, str, str]]:
    return {
        (d.pmid, r.source_id, r.target_id)
        for d in documents
        for r in d.relations
        if r.type == "CID"
    }


def prf(predicted: set, gold: set) -> dict:
    hits = len(predicted & gold)
    p = hits / len(predicted) if predicted else 0.0
    r = hits / len(gold) if gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"p": round(p, 4), "r": round(r, 4), "f1": round(f1, 4), "predicted": len(predicted), "gold": len(gold), "hits": hits}  # fmt: skip


def linking_accuracy(linker: Linker, documents: list[PubTatorDocument], label_map) -> dict:
    """Share of gold mentions (with a concept) whose linked ID is one of the gold IDs."""
    queries, gold = [], []
    for document in documents:
        text = document.text
        defined = abbreviation_map(find_abbreviations(text, sentence_spans(text)))
        for mention in document.mentions:
            if not mention.ids:
                continue
            kind = entity_type(mention.type, label_map)
            queries.append((mention.text, kind, defined.get(mention.text.strip())))
            gold.append((kind, {canonical_id(i) for i in mention.ids}))
    links = linker.link_many(queries)
    by_type: dict[str, list[int]] = {}
    by_tier: dict[str, list[int]] = {}
    for link, (kind, ids) in zip(links, gold, strict=True):
        correct = int(link.id in ids)
        by_type.setdefault(kind, []).append(correct)
        by_tier.setdefault(link.tier, []).append(correct)
    total = sum(sum(v) for v in by_type.values())
    return {
        "accuracy": round(total / len(links), 4) if links else 0.0,
        "mentions": len(links),
        "by_type": {k: round(sum(v) / len(v), 4) for k, v in sorted(by_type.items())},
        "by_tier": {k: {"mentions": len(v), "accuracy": round(sum(v) / len(v), 4)} for k, v in sorted(by_tier.items())},
    }  # fmt: skip


def build(entities: Path, texts: Path, graph: Path, n_docs: int, tiers=None) -> dict:
    linker = {"tiers": list(tiers)} if tiers else {}
    config = KGConfig(
        entities=str(entities),
        documents=str(texts),
        graph=str(graph),
        type_pairs=("Chemical-Disease",),
        examples=n_docs,  # every doc_id per edge: scoring is per document
        linker=linker,
        docs_per_batch=64,
    )
    return build_graph(config)


def chart(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [
        ("cid_doc_level", "doc, predicted"),
        ("cid_sentence_level", "sentence, predicted"),
        ("cid_doc_level_gold_mentions", "doc, gold spans"),
        ("cid_sentence_level_gold_mentions", "sentence, gold spans"),
    ]
    rows = [(label, payload[key]) for key, label in settings]
    rows.append(
        (
            "doc, predicted,\nexact-only (baseline)",
            payload["baseline_exact_linking"]["cid_doc_level"],
        )
    )
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.27
    for offset, metric in enumerate(("p", "r", "f1")):
        xs = [i + (offset - 1) * width for i in range(len(rows))]
        bars = left.bar(xs, [r[metric] for _, r in rows], width, label=metric.upper())
        left.bar_label(bars, fmt="%.2f", fontsize=7)
    left.set_xticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    left.set_ylim(0, 1)
    left.set_title(f"CID relations vs co-occurrence edges ({payload['docs']} BC5CDR test docs)")
    left.legend()
    accuracies = [
        payload["linking_accuracy"],
        payload["baseline_exact_linking"]["linking_accuracy"],
    ]
    bars = right.bar(["tiers (ours)", "exact only\n(baseline)"], accuracies, color=["C0", "grey"])
    right.bar_label(bars, fmt="%.3f")
    right.set_ylim(0, 1)
    right.set_title("Linking accuracy, gold mentions")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=500, help="first N test abstracts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=RESULTS / "kg_quality.json")
    parser.add_argument("--workdir", type=Path, help="keep inputs and graphs here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kg-quality-") as scratch:
        payload = run(args, args.workdir or Path(scratch))
    write_results(payload, args.json, "kg_quality", lambda path: chart(payload, path))
    return 0


def run(args: argparse.Namespace, work: Path) -> dict:
    started = time.perf_counter()
    documents = load_test_documents(args.docs)
    texts = write_texts(documents, work / "texts" / "docs.parquet")
    annotate_started = time.perf_counter()
    predicted = annotate(documents, args.threads)
    annotate_seconds = time.perf_counter() - annotate_started
    predicted_dir = write_annotate_output(work / "predicted", documents, predicted)
    gold_dir = write_annotate_output(work / "gold", documents, gold_mentions(documents))

    from openmed_ray.runtime import ensure_ray

    ensure_ray()
    n = len(documents)
    runs = {
        "predicted": build(predicted_dir, texts, work / "graph-predicted", n),
        "gold_mentions": build(gold_dir, texts, work / "graph-gold", n),
        "predicted_exact_only": build(predicted_dir, texts, work / "graph-exact", n, EXACT_ONLY),
    }
    gold = gold_triples(documents)
    label_map = LinkerConfig().label_map
    ours = linking_accuracy(build_linker(LinkerConfig()), documents, label_map)
    exact = linking_accuracy(build_linker(LinkerConfig(tiers=EXACT_ONLY)), documents, label_map)
    return {
        "docs": n,
        "adapters": ["chemical", "disease"],
        "dictionary": runs["predicted"]["dictionary"],
        "linking_accuracy": ours["accuracy"],
        "linking": ours,
        "cid_doc_level": prf(graph_triples(work / "graph-predicted", "document"), gold),
        "cid_sentence_level": prf(graph_triples(work / "graph-predicted", "sentence"), gold),
        "cid_doc_level_gold_mentions": prf(graph_triples(work / "graph-gold", "document"), gold),
        "cid_sentence_level_gold_mentions": prf(
            graph_triples(work / "graph-gold", "sentence"), gold
        ),
        "baseline_exact_linking": {
            "linking_accuracy": exact["accuracy"],
            "linking": exact,
            "cid_doc_level": prf(graph_triples(work / "graph-exact", "document"), gold),
        },
        "graph": {
            name: {
                "nodes": run["nodes"],
                "edges": run["edges"],
                "mentions": run["mentions"],
                "linking_tiers": run["linking"]["tiers"],
                "seconds": run["seconds"],
            }
            for name, run in runs.items()
        },
        "annotate_seconds": round(annotate_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "workdir": str(work) if args.workdir else None,
    }


if __name__ == "__main__":
    sys.exit(main())
