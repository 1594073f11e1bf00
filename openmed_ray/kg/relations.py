"""Relation scoring in the KG job: every candidate pair of linked entities per document is
scored by a relation bundle; edges take the best document's score and evidence.

    relations  doc_id, head, tail, relation, score, evidence_start, evidence_end, count

The per-document rows are additive like every graph table (their key is the whole row and
`count` is 1), so a replaced partition subtracts exactly the rows it once added. Every
candidate pair is kept with its score, so the export threshold (`min_relation_score`) can
change without re-deriving anything.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from openmed_ray.errors import OpenMedError
from openmed_ray.models.bundle import bundle_version, read_card
from openmed_ray.models.catalog import resolve_adapter
from openmed_ray.relations.examples import (
    LinkedMention,
    RelationDocument,
    RelationTask,
    check_mentions,
)

RELATION_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("head", pa.string()),
        ("tail", pa.string()),
        ("relation", pa.string()),
        ("score", pa.float64()),
        ("evidence_start", pa.int64()),
        ("evidence_end", pa.int64()),
        ("count", pa.int64()),
    ]
)
RELATION_KEYS = [name for name in RELATION_SCHEMA.names if name != "count"]
# Columns every exported edge carries (null where its pair was not scored).
EDGE_RELATION_SCHEMA = pa.schema(
    [
        ("relation", pa.string()),
        ("score", pa.float64()),
        ("relation_doc_count", pa.int64()),
        ("evidence_doc_id", pa.string()),
        ("evidence_start", pa.int64()),
        ("evidence_end", pa.int64()),
    ]
)


GOLD_MENTION_THRESHOLD = "dev, gold mentions"
PIPELINE_THRESHOLD = "dev, predicted and linked mentions"


class RelationBundleError(OpenMedError):
    """A relation bundle that cannot score this graph's entities."""


@dataclass(frozen=True)
class RelationSpec:
    """What the driver knows of a relation bundle without loading its weights."""

    path: str
    name: str
    version: str
    task: RelationTask
    threshold: float  # the default export threshold (see `threshold_source`)
    threshold_source: str = GOLD_MENTION_THRESHOLD

    @property
    def types(self) -> tuple[str, str]:
        return self.task.head_type, self.task.tail_type


def relation_spec(name_or_path: str) -> RelationSpec:
    """Resolve and check a relation bundle by catalog name or path (no weights loaded)."""
    path = resolve_adapter(name_or_path)
    card = read_card(path)
    if card.get("task") != "relation" or "relation_task" not in card:
        raise RelationBundleError(
            f"relations: {name_or_path} ({path}) is not a relation bundle (its card has no "
            "task 'relation'); NER adapters go to `annotate --adapters`"
        )
    # A threshold calibrated on dev through the whole pipeline (predicted, linked mentions)
    # fits a graph better than the one chosen with gold mentions, where every gold pair is a
    # candidate; a card has it once `openmed-ray calibrate-relations` measured it.
    pipeline = card.get("pipeline_threshold")
    return RelationSpec(
        str(path),
        card.get("name") or path.name,
        bundle_version(path),
        RelationTask.from_dict(card["relation_task"]),
        float(pipeline["threshold"] if pipeline else card.get("threshold", 0.5)),
        PIPELINE_THRESHOLD if pipeline else GOLD_MENTION_THRESHOLD,
    )


def check_entity_types(spec: RelationSpec, types: Sequence[str], where: str) -> None:
    """The entities must include both of the bundle's types, or no pair could be scored."""
    missing = [t for t in spec.types if t not in set(types)]
    if missing:
        raise RelationBundleError(
            f"relations: bundle {spec.name} relates {spec.task.head_type} to "
            f"{spec.task.tail_type}, but the entities in {where} have no {', '.join(missing)} "
            f"(their types: {', '.join(sorted(set(types))) or 'none'}); annotate with an adapter "
            "for those types, or map labels with linker.label_types"
        )


def _sentence_of(starts: list[int], offset: int) -> int:
    return max(0, bisect.bisect_right(starts, offset) - 1)


class RelationScorer:
    """Scores documents' candidate pairs with a relation bundle (built once per actor)."""

    def __init__(self, path: str, *, batch_size: int = 8, threads: int | None = None) -> None:
        import torch

        from openmed_ray.models.relation import load_relation_bundle

        if threads:
            torch.set_num_threads(threads)
        self.bundle = load_relation_bundle(path)
        self.batch_size = batch_size
        self.max_length, self.overlap = self.bundle.window()

    def score(
        self,
        documents: Sequence[tuple[str, str, Sequence[tuple[int, int]], Sequence[Any]]],
    ) -> list[list[dict[str, Any]]]:
        """Rows per document for (doc_id, text, sentence spans, mentions with start, end,
        label and node_id): one per candidate pair and relation label, with its evidence."""
        from openmed_ray.models.relation import predict_pairs
        from openmed_ray.relations.encoding import encode_documents

        task = self.bundle.task
        types = {task.head_type, task.tail_type}
        relation_documents = [
            RelationDocument(
                doc_id,
                text,
                [LinkedMention(m.start, m.end, m.label, m.node_id) for m in mentions if m.label in types],
            )
            for doc_id, text, _, mentions in documents
        ]  # fmt: skip
        for document in relation_documents:
            check_mentions(document)  # an entity row outside its text names its document
        encoded = encode_documents(
            self.bundle.tokenizer,
            relation_documents,
            task,
            max_length=self.max_length,
            overlap=self.overlap,
        )
        predictions = predict_pairs(
            self.bundle.model,
            encoded,
            pad_id=self.bundle.tokenizer.pad_token_id or 0,
            batch_size=self.batch_size,
            evidence=True,
        )
        out = []
        for (doc_id, _, sentences, _), document, predicted in zip(
            documents, encoded, predictions, strict=True
        ):
            starts = [start for start, _ in sentences]
            rows = []
            for pair, (h, t) in enumerate(document.pairs):
                first, second = (document.mention_spans[m] for m in predicted.best_mentions[pair])
                lo = _sentence_of(starts, min(first[0], second[0]))
                hi = _sentence_of(starts, max(first[0], second[0]))
                begin = sentences[lo][0] if sentences else min(first[0], second[0])
                end = sentences[hi][1] if sentences else max(first[1], second[1])
                for label, relation in enumerate(task.labels[1:], start=1):
                    rows.append(
                        {
                            "doc_id": doc_id,
                            "head": document.entities[h][1],
                            "tail": document.entities[t][1],
                            "relation": relation,
                            "score": float(np.round(predicted.probabilities[pair, label], 6)),
                            "evidence_start": int(begin),
                            "evidence_end": int(max(end, first[1], second[1])),
                            "count": 1,
                        }
                    )
            out.append(rows)
        return out


def relation_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=RELATION_SCHEMA)


def attach_relations(edges: pa.Table, relations: pa.Table, min_score: float | None) -> pa.Table:
    """Edges with the relation columns: per pair its best relation's highest document score,
    the number of documents scoring at least `min_score`, and the best document's evidence.
    A pair is matched to the edge between its two nodes whichever way the edge is ordered."""
    columns = {name: [None] * edges.num_rows for name in EDGE_RELATION_SCHEMA.names}
    if relations.num_rows and edges.num_rows:
        ordered = relations.sort_by(
            [("head", "ascending"), ("tail", "ascending"), ("score", "descending"),
             ("doc_id", "ascending")]
        )  # fmt: skip
        best: dict[frozenset, dict[str, Any]] = {}
        passing: dict[frozenset, int] = {}
        threshold = 0.0 if min_score is None else min_score
        for row in ordered.to_pylist():
            key = frozenset((row["head"], row["tail"]))
            best.setdefault(key, row)
            if row["score"] >= threshold:
                passing[key] = passing.get(key, 0) + 1
        sources, targets = edges.column("src").to_pylist(), edges.column("dst").to_pylist()
        for index, (src, dst) in enumerate(zip(sources, targets, strict=True)):
            row = best.get(frozenset((src, dst)))
            if row is None:
                continue
            columns["relation"][index] = row["relation"] if row["score"] >= threshold else None
            columns["score"][index] = row["score"]
            columns["relation_doc_count"][index] = passing.get(frozenset((src, dst)), 0)
            columns["evidence_doc_id"][index] = row["doc_id"]
            columns["evidence_start"][index] = row["evidence_start"]
            columns["evidence_end"][index] = row["evidence_end"]
    for field in EDGE_RELATION_SCHEMA:
        edges = edges.append_column(field, pa.array(columns[field.name], field.type))
    return edges


def exported_relations(relations: pa.Table, min_score: float) -> pa.Table:
    """The per-document relations scoring at least `min_score`, best first per document."""
    kept = relations.filter(pc.greater_equal(relations.column("score"), min_score))
    return kept.select(RELATION_KEYS).sort_by([("doc_id", "ascending"), ("score", "descending")])
