"""Relation documents to encoder inputs: entity markers, windows, mention and pair indices.

Each distinct mention span is wrapped in marker tokens (`*`, as in ATLOP) inside the
wordpiece sequence; a mention is represented by its start marker's hidden state. A document
longer than one window is split into overlapping windows, and each mention is read from
the window where its marker is most central, so long documents keep every mention.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from openmed_ray.relations.examples import (
    RelationDataError,
    RelationDocument,
    RelationTask,
)
from openmed_ray.text.tokenize import sentence_spans
from openmed_ray.text.windows import assign_owners, plan_windows

MARKER = "*"


@dataclass
class EncodedRelationDocument:
    doc_id: str
    windows: list[list[int]]  # input ids, special tokens included
    mention_window: list[int]  # per mention: its window
    mention_position: list[int]  # per mention: its start marker's position in that window
    mention_entity: list[int]  # per mention: index into entities
    mention_spans: list[tuple[int, int]]  # per mention: character offsets
    mention_sentence: list[int]  # per mention: index of its sentence in the document
    entities: list[tuple[str, str]]  # (type, key)
    pairs: list[tuple[int, int]]  # (head entity, tail entity) indices
    labels: list[int] | None  # per pair, for gold documents

    @property
    def n_wordpieces(self) -> int:
        return sum(len(w) for w in self.windows)


def marker_id(tokenizer) -> int:
    ids = tokenizer(MARKER, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise RelationDataError(
            f"the backbone's vocabulary has no single token for the entity marker {MARKER!r} "
            f"(it becomes {tokenizer.convert_ids_to_tokens(ids)}); relation models need one"
        )
    return ids[0]


def _special_ids(tokenizer) -> tuple[list[int], list[int]]:
    probe = tokenizer("x", add_special_tokens=True)["input_ids"]
    inner = tokenizer("x", add_special_tokens=False)["input_ids"]
    at = probe.index(inner[0])
    return probe[:at], probe[at + len(inner) :]


def encode_documents(
    tokenizer,
    documents: Sequence[RelationDocument],
    task: RelationTask,
    *,
    max_length: int = 512,
    overlap: int = 128,
    labeled: bool = False,
) -> list[EncodedRelationDocument]:
    """Encode every document; `labeled`: pair labels from the gold relations (others `none`)."""
    marker = marker_id(tokenizer)
    prefix, suffix = _special_ids(tokenizer)
    capacity = max_length - len(prefix) - len(suffix)
    if not 0 <= overlap < capacity:
        raise RelationDataError(f"overlap {overlap} must be below the window capacity {capacity}")
    label_ids = {label: i for i, label in enumerate(task.labels)}
    texts = [d.text for d in documents]
    encodings = tokenizer(
        texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False
    )
    out = []
    for doc, ids, offsets in zip(
        documents, encodings["input_ids"], encodings["offset_mapping"], strict=True
    ):
        out.append(
            _encode_one(
                doc,
                ids,
                offsets,
                task,
                label_ids if labeled else None,
                marker,
                prefix,
                suffix,
                capacity,
                overlap,
            )
        )
    return out


def _encode_one(
    doc: RelationDocument,
    ids: list[int],
    offsets: list[tuple[int, int]],
    task: RelationTask,
    label_ids: dict[str, int] | None,
    marker: int,
    prefix: list[int],
    suffix: list[int],
    capacity: int,
    overlap: int,
) -> EncodedRelationDocument:
    types = {task.head_type, task.tail_type}
    mentions = [m for m in doc.mentions if m.type in types]
    # Pieces covered by each distinct span; a span with no piece (only spaces) cannot be read.
    spans = sorted({(m.start, m.end) for m in mentions})
    span_pieces: dict[tuple[int, int], tuple[int, int]] = {}
    for start, end in spans:
        covered = [i for i, (s, e) in enumerate(offsets) if s < end and e > start and e > s]
        if not covered:
            raise RelationDataError(
                f"document {doc.doc_id}: mention {start}..{end} {doc.text[start:end]!r} "
                "covers no wordpiece"
            )
        span_pieces[(start, end)] = (covered[0], covered[-1])
    opening: dict[int, list[tuple[int, int]]] = {}
    closing: dict[int, int] = {}
    for span, (first, last) in span_pieces.items():
        opening.setdefault(first, []).append(span)
        closing[last] = closing.get(last, 0) + 1
    sequence: list[int] = []
    marker_at: dict[tuple[int, int], int] = {}
    for i, piece in enumerate(ids):
        for span in opening.get(i, ()):
            marker_at[span] = len(sequence)
            sequence.append(marker)
        sequence.append(piece)
        sequence.extend([marker] * closing.get(i, 0))
    plan = plan_windows(len(sequence), capacity, overlap)
    windows = [prefix + sequence[s:e] + suffix for s, e in plan]
    span_list = list(span_pieces)
    owners = assign_owners([marker_at[span] for span in span_list], plan) if span_list else []
    owner_of = dict(zip(span_list, owners, strict=True))

    entities = list(dict.fromkeys((m.type, m.key) for m in mentions))
    entity_index = {entity: i for i, entity in enumerate(entities)}
    mention_window, mention_position, mention_entity, mention_spans = [], [], [], []
    sentence_starts = [start for start, _ in sentence_spans(doc.text)]
    mention_sentence = []
    for m in dict.fromkeys(mentions):  # a mention repeated in the input counts once
        span = (m.start, m.end)
        window = owner_of[span]
        mention_window.append(window)
        mention_position.append(len(prefix) + marker_at[span] - plan[window][0])
        mention_entity.append(entity_index[(m.type, m.key)])
        mention_spans.append(span)
        mention_sentence.append(max(bisect.bisect_right(sentence_starts, m.start) - 1, 0))
    pairs = [
        (entity_index[(task.head_type, h)], entity_index[(task.tail_type, t)])
        for h, t in doc.candidate_pairs(task)
    ]
    labels = None
    if label_ids is not None:
        unknown = sorted({label for label in doc.relations.values()} - set(label_ids))
        if unknown:
            raise RelationDataError(
                f"document {doc.doc_id}: relation label(s) {unknown} are not in {task.labels}"
            )
        labels = [
            label_ids[doc.relations.get((entities[h][1], entities[t][1]), task.labels[0])]
            for h, t in pairs
        ]
    return EncodedRelationDocument(
        doc.doc_id,
        windows,
        mention_window,
        mention_position,
        mention_entity,
        mention_spans,
        mention_sentence,
        entities,
        pairs,
        labels,
    )
