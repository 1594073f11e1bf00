"""The annotation output store: `entities/` and `documents/` Parquet parts under one root.

Each write produces a pair of parts with the same name. The entities part is written first
and the documents part last, each atomically, so a documents part is the commit marker: a
crash leaves at most an orphan entities part, which `remove_orphans` deletes on resume, and
`completed_doc_ids` (from documents parts only) is exactly the set of finished documents.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from openmed_ray.io.claim import ClaimFence
from openmed_ray.io.filesystem import join, resolve, retry_transient, write_parquet_atomic

ENTITY_FIELDS = [
    ("start", pa.int64()),
    ("end", pa.int64()),
    ("text", pa.string()),
    ("label", pa.string()),
    ("score", pa.float32()),
    ("adapter", pa.string()),
    ("adapter_version", pa.string()),
]
ENTITY_STRUCT = pa.struct(ENTITY_FIELDS)
ENTITY_SCHEMA = pa.schema([("doc_id", pa.string()), *ENTITY_FIELDS])
DOCUMENT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("n_chars", pa.int64()),
        ("n_wordpieces", pa.int64()),
        ("n_entities", pa.int64()),
        ("run_id", pa.string()),
    ]
)
# What an annotation actor returns: one row per document, entities nested.
ANNOTATED_SCHEMA = pa.schema([*DOCUMENT_SCHEMA, ("entities", pa.list_(ENTITY_STRUCT))])

ENTITIES = "entities"
DOCUMENTS = "documents"


def part_name(run_id: str, doc_ids: pa.Array | pa.ChunkedArray) -> str:
    """A name derived from the run and the documents a part holds: a retried write (a task
    rerun after a lost node) rewrites the same pair instead of adding a duplicate."""
    digest = hashlib.sha1()
    for doc_id in doc_ids.to_pylist():
        digest.update(doc_id.encode("utf-8", "surrogatepass") + b"\0")
    return f"part-{run_id}-{digest.hexdigest()[:16]}.parquet"


def split_annotated(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(entities, documents) from actor output rows."""
    table = table.cast(ANNOTATED_SCHEMA)
    documents = table.select(DOCUMENT_SCHEMA.names)
    lists = table.column("entities")
    parents = pc.list_parent_indices(lists)
    flat = pc.list_flatten(lists)
    if isinstance(flat, pa.ChunkedArray):
        flat = flat.combine_chunks() if flat.num_chunks else pa.array([], ENTITY_STRUCT)
    columns = {"doc_id": pc.take(table.column("doc_id"), parents)}
    for name, _ in ENTITY_FIELDS:
        columns[name] = flat.field(name)
    return pa.table(columns, schema=ENTITY_SCHEMA), documents


def write_part(root: str, name: str, entities: pa.Table, documents: pa.Table) -> None:
    """Write one part pair; documents last, so it marks the pair complete."""
    write_parquet_atomic(entities.cast(ENTITY_SCHEMA), join(root, ENTITIES, name))
    write_parquet_atomic(documents.cast(DOCUMENT_SCHEMA), join(root, DOCUMENTS, name))


def commit_part(
    root: str,
    name: str,
    entities: pa.Table,
    documents: pa.Table,
    fence: ClaimFence,
    attempts: int,
    backoff_seconds: float,
) -> None:
    """Write one part pair while this run still owns the output, retrying transient
    storage errors; a rewrite after a half-done attempt replaces the same names."""

    def attempt() -> None:
        fence.verify()
        write_part(root, name, entities, documents)

    retry_transient(
        attempt, attempts=attempts, backoff_seconds=backoff_seconds, what=f"writing {root}/*/{name}"
    )


def list_parts(root: str, kind: str) -> list[str]:
    """Names of the complete (non-temporary) parts of one kind."""
    fs, path = resolve(join(root, kind))
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(
        info.base_name
        for info in infos
        if info.type == pafs.FileType.File
        and info.base_name.endswith(".parquet")
        and not info.base_name.startswith(".")
    )


def remove_orphans(root: str) -> list[str]:
    """Delete entities parts whose documents part never landed (a crash between the two),
    and the temporary files of writes that never finished (a killed process's). Only the
    claim's owner calls this, so no live writer's temporary file is touched."""
    committed = set(list_parts(root, DOCUMENTS))
    orphans = [name for name in list_parts(root, ENTITIES) if name not in committed]
    fs, _ = resolve(root)
    for name in orphans:
        fs.delete_file(resolve(join(root, ENTITIES, name))[1])
    for kind in (ENTITIES, DOCUMENTS):
        _, path = resolve(join(root, kind))
        if fs.get_file_info(path).type != pafs.FileType.Directory:
            continue
        for info in fs.get_file_info(pafs.FileSelector(path, recursive=False)):
            if info.base_name.startswith(".") and info.base_name.endswith(".tmp"):
                fs.delete_file(info.path)
    return orphans


def read_parts(root: str, kind: str, columns: list[str] | None = None) -> pa.Table:
    schema = ENTITY_SCHEMA if kind == ENTITIES else DOCUMENT_SCHEMA
    names = list_parts(root, kind)
    if not names:
        return schema.empty_table() if columns is None else schema.empty_table().select(columns)
    fs, _ = resolve(root)
    tables = [
        pq.read_table(resolve(join(root, kind, name))[1], filesystem=fs, columns=columns)
        for name in names
    ]
    return pa.concat_tables(tables)


def completed_doc_ids(root: str) -> pa.Array:
    ids = read_parts(root, DOCUMENTS, columns=["doc_id"]).column("doc_id")
    return ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
