"""Parquet schemas and exports for benchmark data (sentences, PubTator documents)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from openmed_ray.io.filesystem import join, write_parquet_atomic
from openmed_ray.io.iob import Sentence
from openmed_ray.io.pubtator import PubTatorDocument

SENTENCE_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("sentence_id", pa.int64()),
        ("document", pa.int64()),
        ("line", pa.int64()),
        ("tokens", pa.list_(pa.string())),
        ("tags", pa.list_(pa.string())),
    ]
)

PUBTATOR_DOCUMENT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("title", pa.string()),
        ("abstract", pa.string()),
        ("text", pa.string()),
    ]
)
PUBTATOR_MENTION_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("ids", pa.list_(pa.string())),
    ]
)
PUBTATOR_RELATION_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("type", pa.string()),
        ("source_id", pa.string()),
        ("target_id", pa.string()),
    ]
)


def sentences_to_table(sentences: Sequence[Sentence], dataset: str, split: str) -> pa.Table:
    return pa.table(
        {
            "dataset": [dataset] * len(sentences),
            "split": [split] * len(sentences),
            "sentence_id": list(range(len(sentences))),
            "document": [s.document for s in sentences],
            "line": [s.line for s in sentences],
            "tokens": [list(s.tokens) for s in sentences],
            "tags": [list(s.tags) for s in sentences],
        },
        schema=SENTENCE_SCHEMA,
    )


def export_dataset(dataset, output: str | Path) -> list[str]:
    """Write `<output>/<dataset>/<split>.parquet` for every split; returns the written URIs."""
    from openmed_ray.datasets import SPLITS

    written = []
    for split in SPLITS:
        uri = join(str(output), dataset.name, f"{split}.parquet")
        write_parquet_atomic(sentences_to_table(dataset.load(split), dataset.name, split), uri)
        written.append(uri)
    return written


def pubtator_to_tables(documents: Sequence[PubTatorDocument]) -> dict[str, pa.Table]:
    """Documents, mentions and relations of a PubTator corpus as three Arrow tables."""
    docs = pa.table(
        {
            "doc_id": [d.pmid for d in documents],
            "title": [d.title for d in documents],
            "abstract": [d.abstract for d in documents],
            "text": [d.text for d in documents],
        },
        schema=PUBTATOR_DOCUMENT_SCHEMA,
    )
    mentions = [(d.pmid, m) for d in documents for m in d.mentions]
    relations = [(d.pmid, r) for d in documents for r in d.relations]
    return {
        "documents": docs,
        "mentions": pa.table(
            {
                "doc_id": [pmid for pmid, _ in mentions],
                "start": [m.start for _, m in mentions],
                "end": [m.end for _, m in mentions],
                "text": [m.text for _, m in mentions],
                "label": [m.type for _, m in mentions],
                "ids": [list(m.ids) for _, m in mentions],
            },
            schema=PUBTATOR_MENTION_SCHEMA,
        ),
        "relations": pa.table(
            {
                "doc_id": [pmid for pmid, _ in relations],
                "type": [r.type for _, r in relations],
                "source_id": [r.source_id for _, r in relations],
                "target_id": [r.target_id for _, r in relations],
            },
            schema=PUBTATOR_RELATION_SCHEMA,
        ),
    }


def export_pubtator(documents: Sequence[PubTatorDocument], output: str | Path) -> list[str]:
    written = []
    for name, table in pubtator_to_tables(documents).items():
        uri = join(str(output), f"{name}.parquet")
        write_parquet_atomic(table, uri)
        written.append(uri)
    return written
