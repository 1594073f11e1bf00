"""CID relations on the BC5CDR test set: the relation classifier against co-occurrence.

    python benchmarks/kg_relations.py --docs 500 --bundle cid [--calibrate]

On the first N test abstracts, in one run:
1. Baseline (today's graph): every chemical-disease pair of a document is an edge
   (`openmed-ray kg` without --relations), with the shipped chemical/disease adapters'
   predicted mentions and with gold mention spans; and the stricter variant, the pairs
   that share a sentence.
2. The classifier on gold mentions with their gold MeSH IDs (the relation task alone).
3. The classifier inside `openmed-ray kg --relations` on gold spans linked by our linker, and
   end to end on predicted and linked mentions (the real pipeline).
With --calibrate, first the pipeline threshold (`openmed-ray calibrate-relations`, the
library's verb): the end-to-end run on the 500 dev abstracts with a linking dictionary from
train alone, the threshold with the best dev F1 written into the bundle's card
(`pipeline_threshold`), which `kg --relations` then exports at by default.
Document-level (doc, chemical, disease) triples are scored against the gold CID relations
at the bundle's dev-chosen thresholds (gold mentions: the card's `threshold`; linked
mentions: the graph's default, `pipeline_threshold` where the card has one); the
precision-recall curve over the threshold goes to the PNG. Recall is split into pairs that
share a sentence and pairs that never do.
Throughput of the relation stage: the scorer alone in this process, and the KG run on local
Ray with --relations against the same run without it.
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

import pyarrow.parquet as pq  # noqa: E402

from benchmarks.common import RESULTS, write_results  # noqa: E402
from benchmarks.kg_quality import (  # noqa: E402
    MESH,
    NER_ADAPTERS,
    annotate,
    gold_mentions,
    gold_triples,
    graph_triples,
    load_test_documents,
    prf,
    write_annotate_output,
)
from openmed_ray.config import (  # noqa: E402
    KGConfig,
    RelationCalibrationConfig,
    resolve_data_root,
)
from openmed_ray.eval.relations import (  # noqa: E402
    precision_recall_curve,
    relation_prf,
)
from openmed_ray.io.pubtator import write_texts  # noqa: E402
from openmed_ray.kg.calibrate import calibrate_relations  # noqa: E402
from openmed_ray.kg.pipeline import build_graph  # noqa: E402
from openmed_ray.kg.relations import relation_spec  # noqa: E402
from openmed_ray.kg.store import GraphStore  # noqa: E402
from openmed_ray.models.bundle import read_card  # noqa: E402
from openmed_ray.models.catalog import resolve_adapter  # noqa: E402
from openmed_ray.relations.examples import CID_TASK, from_pubtator  # noqa: E402
from openmed_ray.text.tokenize import sentence_spans  # noqa: E402

DEV_FILE = "normalization/BC5CDR/CDR_DevelopmentSet.PubTator.txt"


def strip(node: str) -> str:
    return node[len(MESH) :] if node.startswith(MESH) else node


def build(
    entities: Path,
    texts: Path,
    graph: Path,
    n_docs: int,
    bundle: str | None,
    threads: int = 2,
) -> dict:
    config = KGConfig(
        entities=str(entities),
        documents=str(texts),
        graph=str(graph),
        type_pairs=("Chemical-Disease",),
        examples=n_docs,
        docs_per_batch=64,
        cpus_per_actor=1.0 if bundle else 0.5,  # a read task needs the other CPU of two
        relations=bundle or "",
        relation_threads=threads if bundle else None,
        min_relation_score=0.0 if bundle else None,  # export every score: the curve needs them
    )
    return build_graph(config)


def calibrate(bundle_path: Path, threads: int, work: Path) -> dict:
    """The pipeline threshold, chosen on the dev abstracts end to end by the library's
    `calibrate-relations` (the shipped chemical and disease adapters in fp32, a linking
    dictionary from train alone); it writes the threshold into the bundle's card."""
    config = RelationCalibrationConfig(
        bundle=str(bundle_path),
        gold=str(resolve_data_root() / DEV_FILE),
        work=str(work / "calibration"),
        adapters=NER_ADAPTERS,
        precision="fp32",
        relation_threads=threads,
    )
    return calibrate_relations(config)


def graph_scores(graph: Path) -> list[tuple[tuple[str, str, str, str], float]]:
    """((doc, chemical MeSH, disease MeSH, CID), score) of every scored pair of MeSH-linked
    entities in the graph (as the co-occurrence baseline counts only those)."""
    state = GraphStore(graph).current()
    rows = pq.read_table(state.path / "relations.parquet").to_pylist()
    return [
        ((r["doc_id"], strip(r["head"]), strip(r["tail"]), "CID"), r["score"])
        for r in rows
        if r["head"].startswith(MESH) and r["tail"].startswith(MESH)
    ]


def at_threshold(scored, gold: set, threshold: float) -> dict:
    chosen = [triple for triple, score in scored if score >= threshold]
    return relation_prf(chosen, gold, threshold).to_dict()


def sentence_split(documents) -> tuple[set, set]:
    """Gold CID triples whose two entities share a sentence, and those that never do."""
    intra, cross = set(), set()
    for document in documents:
        sentences = sentence_spans(document.text)
        where: dict[str, set[int]] = {}
        for mention in document.mentions:
            index = max(i for i, (start, _) in enumerate(sentences) if start <= mention.start)
            for key in mention.ids:
                where.setdefault(key, set()).add(index)
        for relation in document.relations:
            triple = (document.pmid, relation.source_id, relation.target_id, "CID")
            shared = where.get(relation.source_id, set()) & where.get(relation.target_id, set())
            (intra if shared else cross).add(triple)
    return intra, cross


def recall_by_distance(scored, intra: set, cross: set, threshold: float) -> dict:
    chosen = {triple for triple, score in scored if score >= threshold}
    return {
        "intra_sentence": {"gold": len(intra), "recall": round(len(chosen & intra) / max(1, len(intra)), 4)},
        "cross_sentence": {"gold": len(cross), "recall": round(len(chosen & cross) / max(1, len(cross)), 4)},
    }  # fmt: skip


def score_gold(bundle_path: Path, documents, threads: int) -> tuple[list, float, int]:
    """The classifier alone on gold mentions and IDs: (scored triples, seconds, pairs)."""
    from openmed_ray.kg.graph import Mention
    from openmed_ray.kg.relations import RelationScorer

    scorer = RelationScorer(str(bundle_path), threads=threads)
    inputs = []
    for document in from_pubtator(documents, CID_TASK):
        mentions = [Mention(m.start, m.end, "", m.key, m.type, "gold") for m in document.mentions]
        inputs.append((document.doc_id, document.text, sentence_spans(document.text), mentions))
    started = time.perf_counter()
    rows = [row for document in scorer.score(inputs) for row in document]
    seconds = time.perf_counter() - started
    scored = [((r["doc_id"], r["head"], r["tail"], r["relation"]), r["score"]) for r in rows]
    return scored, seconds, len(rows)


def chart(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [
        ("cooccurrence_predicted", "co-occurrence\npredicted (today)"),
        ("cooccurrence_sentence_predicted", "same sentence\npredicted (today)"),
        ("cooccurrence_gold_spans", "co-occurrence\ngold spans"),
        ("classifier_gold_mentions", "classifier\ngold mentions+IDs"),
        ("classifier_gold_spans_linked", "classifier\ngold spans, linked"),
        ("classifier_end_to_end", "classifier\nend to end"),
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.27
    for offset, metric in enumerate(("precision", "recall", "f1")):
        xs = [i + (offset - 1) * width for i in range(len(settings))]
        values = [payload["results"][key][metric] for key, _ in settings]
        bars = left.bar(xs, values, width, label=metric)
        left.bar_label(bars, fmt="%.2f", fontsize=7)
    left.axhline(0.55, color="C2", linestyle=":", linewidth=1)
    left.axhline(0.45, color="C3", linestyle=":", linewidth=1)
    left.set_xticks(range(len(settings)), [label for _, label in settings], fontsize=8)
    left.set_ylim(0, 1)
    left.set_title(
        f"Document-level CID, {payload['docs']} BC5CDR test abstracts (bars: 0.55 gold, 0.45 e2e)"
    )
    left.legend(fontsize=8)
    for key, label in (
        ("classifier_gold_mentions", "gold mentions+IDs"),
        ("classifier_end_to_end", "end to end"),
    ):
        curve = payload["curves"][key]
        line = right.plot(
            [p["recall"] for p in curve], [p["precision"] for p in curve], label=label
        )
        chosen = payload["results"][key]
        right.scatter([chosen["recall"]], [chosen["precision"]], color=line[0].get_color())
    baseline = payload["results"]["cooccurrence_predicted"]
    right.scatter([baseline["recall"]], [baseline["precision"]], marker="x", color="grey",
                  label="co-occurrence (today)")  # fmt: skip
    right.set_xlabel("recall")
    right.set_ylabel("precision")
    right.set_xlim(0, 1)
    right.set_ylim(0, 1)
    right.set_title(
        f"Over the score threshold (dots: gold mentions at {payload['threshold']:.3f}, "
        f"end to end at {payload['kg_default_threshold']['value']:.3f})",
        fontsize=9,
    )
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args: argparse.Namespace, work: Path) -> dict:
    from openmed_ray.runtime import ensure_ray

    started = time.perf_counter()
    bundle_path = resolve_adapter(args.bundle)
    if args.calibrate:
        calibrate(bundle_path, args.threads, work)
    card = read_card(bundle_path)
    threshold = float(card["threshold"])  # chosen on dev with gold mentions
    spec = relation_spec(str(bundle_path))  # what `kg --relations` exports by default
    documents = load_test_documents(args.docs)
    texts = write_texts(documents, work / "texts" / "docs.parquet")
    gold = {(*t, "CID") for t in gold_triples(documents)}
    intra, cross = sentence_split(documents)

    gold_scored, scorer_seconds, pairs = score_gold(bundle_path, documents, args.threads)

    annotate_started = time.perf_counter()
    predicted_dir = write_annotate_output(
        work / "predicted", documents, annotate(documents, args.threads)
    )
    annotate_seconds = time.perf_counter() - annotate_started
    gold_dir = write_annotate_output(work / "gold", documents, gold_mentions(documents))
    # No dashboard: another Ray on this machine (a training run's cluster) may own port 8265,
    # and Ray Train's placement-group cleaner asks whoever serves it (see runtime.py).
    ensure_ray(include_dashboard=False)
    n = len(documents)
    runs = {
        "cooccurrence_predicted": build(predicted_dir, texts, work / "cooc-predicted", n, None),
        "cooccurrence_gold_spans": build(gold_dir, texts, work / "cooc-gold", n, None),
        "classifier_gold_spans_linked": build(gold_dir, texts, work / "rel-gold", n, str(bundle_path), args.threads),
        "classifier_end_to_end": build(predicted_dir, texts, work / "rel-predicted", n, str(bundle_path), args.threads),
    }  # fmt: skip
    scored = {
        "classifier_gold_mentions": gold_scored,
        "classifier_gold_spans_linked": graph_scores(work / "rel-gold"),
        "classifier_end_to_end": graph_scores(work / "rel-predicted"),
    }
    pairs_of = {t[:3] for t in gold}
    results = {
        "cooccurrence_predicted": prf(graph_triples(work / "cooc-predicted", "document"), pairs_of),
        "cooccurrence_sentence_predicted": prf(graph_triples(work / "cooc-predicted", "sentence"), pairs_of),
        "cooccurrence_gold_spans": prf(graph_triples(work / "cooc-gold", "document"), pairs_of),
    }  # fmt: skip
    for key in results:  # the same field names as the classifier's rows
        results[key] = {"precision": results[key]["p"], "recall": results[key]["r"], **results[key]}
    for key, values in scored.items():
        results[key] = at_threshold(values, gold, threshold)
    # The graph's default: the pipeline-calibrated threshold where the card has one.
    for key in ("classifier_gold_spans_linked", "classifier_end_to_end"):
        results[f"{key}_at_gold_mention_threshold"] = results[key]
        results[key] = at_threshold(scored[key], gold, spec.threshold)
    e2e, plain = runs["classifier_end_to_end"], runs["cooccurrence_predicted"]
    relation_seconds = e2e["seconds"] - plain["seconds"]
    return {
        "docs": n,
        "bundle": {"name": card["name"], "version": card["version"], "path": str(bundle_path)},
        "threshold": threshold,
        "pipeline_threshold": card.get("pipeline_threshold"),
        "kg_default_threshold": {"value": spec.threshold, "chosen_on": spec.threshold_source},
        "gold_relations": len(gold),
        "results": results,
        "f1_gold_mentions": results["classifier_gold_mentions"]["f1"],
        "f1_end_to_end": results["classifier_end_to_end"]["f1"],
        "bars": {"gold_mentions": 0.55, "end_to_end": 0.45},
        "recall_by_sentence_distance": {
            key: recall_by_distance(
                values,
                intra,
                cross,
                threshold if key == "classifier_gold_mentions" else spec.threshold,
            )
            for key, values in scored.items()
        },
        "curves": {key: precision_recall_curve(values, gold) for key, values in scored.items()},
        "throughput": {
            "scorer_in_process": {
                "threads": args.threads,
                "candidate_pairs": pairs,
                "seconds": round(scorer_seconds, 2),
                "pairs_per_second": round(pairs / scorer_seconds, 1),
                "abstracts_per_second": round(n / scorer_seconds, 2),
            },
            "kg_on_local_ray": {
                "candidate_pairs": e2e["relations"]["scored_pairs"],
                "kg_seconds_with_relations": e2e["seconds"],
                "kg_seconds_without": plain["seconds"],
                "relation_stage_seconds": round(relation_seconds, 2),
                "pairs_per_second": round(e2e["relations"]["scored_pairs"] / relation_seconds, 1),
                "abstracts_per_second": round(n / relation_seconds, 2),
            },
        },
        "graph_runs": {
            key: {
                "seconds": run["seconds"],
                "edges": run["edges"],
                "relations": run.get("relations"),
            }
            for key, run in runs.items()
        },
        "annotate_seconds": round(annotate_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=500, help="first N test abstracts")
    parser.add_argument("--bundle", default="cid", help="relation bundle: name or path")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=RESULTS / "kg_relations.json")
    parser.add_argument("--workdir", type=Path, help="keep inputs and graphs here")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="first choose the pipeline threshold on the dev abstracts end to end and write it "
        "into the bundle's card (pipeline_threshold), the default of `kg --relations`",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kg-relations-") as scratch:
        payload = run(args, args.workdir or Path(scratch))
    write_results(payload, args.json, "kg_relations", lambda path: chart(payload, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
