"""Input partitions: the units a graph merges, each identified by a content hash.

ENTITIES_DIR (local or s3://) is split into partitions as follows:

* an annotate output (it has `entities/`): each entities part is a partition, with the
  documents part of the same name (annotate's part names are stable, so a resumed run adds
  partitions and never changes one);
* otherwise each child is one: a subdirectory holding an annotate output
  (`DAY/entities/`, `DAY/documents/`) or plain entity Parquet files, or a Parquet file.

Names starting with `.` or `_` are ignored. A partition's documents are its `documents`
rows with status `ok` (documents without entities count in NPMI's denominators), or, with
no documents files, the doc_ids of its entities.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from openmed_ray.errors import OpenMedError
from openmed_ray.io.annotations import DOCUMENTS, ENTITIES
from openmed_ray.io.filesystem import resolve

ENTITY_INPUT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("score", pa.float32()),  # optional in the files (1.0 when absent)
    ]
)
ENTITY_COLUMNS = ENTITY_INPUT_SCHEMA.names[:-1]
_CHUNK = 1 << 20


class PartitionError(OpenMedError):
    """An input partition cannot be read as entities (missing, wrong columns)."""


@dataclass
class Partition:
    name: str
    base: str  # the directory its file names are relative to, in hashes
    entity_files: list[str] = field(default_factory=list)  # paths inside `filesystem`
    document_files: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return [*self.entity_files, *self.document_files]


def _visible(info: pafs.FileInfo) -> bool:
    return not info.base_name.startswith((".", "_"))


def _parquet_files(fs: pafs.FileSystem, path: str, recursive: bool = False) -> list[str]:
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
    return sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and i.base_name.endswith(".parquet")
        and all(not part.startswith((".", "_")) for part in i.path[len(path) :].split("/"))
    )


def _annotate_output(fs: pafs.FileSystem, path: str, name: str) -> Partition:
    return Partition(
        name,
        path,
        _parquet_files(fs, f"{path}/{ENTITIES}"),
        _parquet_files(fs, f"{path}/{DOCUMENTS}"),
    )


def discover_partitions(root: str) -> tuple[pafs.FileSystem, list[Partition]]:
    """The filesystem and the partitions of ENTITIES_DIR, sorted by name."""
    fs, path = resolve(root)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        raise PartitionError(f"entities directory {root} does not exist (or is not a directory)")
    partitions: list[Partition] = []
    if fs.get_file_info(f"{path}/{ENTITIES}").type == pafs.FileType.Directory:
        documents = {f.rsplit("/", 1)[1]: f for f in _parquet_files(fs, f"{path}/{DOCUMENTS}")}
        for file in _parquet_files(fs, f"{path}/{ENTITIES}"):
            name = file.rsplit("/", 1)[1]
            partitions.append(
                Partition(name, path, [file], [documents[name]] if name in documents else [])
            )
        return fs, partitions
    for info in fs.get_file_info(pafs.FileSelector(path)):
        if not _visible(info):
            continue
        if info.type == pafs.FileType.File and info.base_name.endswith(".parquet"):
            partitions.append(Partition(info.base_name, path, [info.path]))
        elif info.type == pafs.FileType.Directory:
            if fs.get_file_info(f"{info.path}/{ENTITIES}").type == pafs.FileType.Directory:
                partition = _annotate_output(fs, info.path, info.base_name)
            else:
                partition = Partition(
                    info.base_name, info.path, _parquet_files(fs, info.path, recursive=True)
                )
            if partition.files:
                partitions.append(partition)
    return fs, sorted(partitions, key=lambda p: p.name)


def _sha256(fs: pafs.FileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(
    fs: pafs.FileSystem, partition: Partition, known: dict[str, dict]
) -> tuple[str, dict[str, dict]]:
    """(hash of the partition's files, per-file records). A file whose size and modification
    time match its record in `known` (from the manifest) is not read again."""
    records: dict[str, dict] = {}
    digest = hashlib.sha256()
    for path in sorted(partition.files):
        info = fs.get_file_info(path)
        stamp = {"size": info.size, "mtime_ns": info.mtime_ns}
        previous = known.get(path)
        if (
            previous
            and stamp["mtime_ns"] is not None
            and all(previous.get(k) == v for k, v in stamp.items())
        ):
            sha = previous["sha256"]
        else:
            sha = _sha256(fs, path)
        records[path] = {**stamp, "sha256": sha}
        relative = path[len(partition.base) :].lstrip("/")
        digest.update(f"{relative}\t{sha}\n".encode())
    return digest.hexdigest()[:32], records


def read_entities(fs: pafs.FileSystem, partition: Partition) -> pa.Table:
    """The partition's entities: doc_id (string), start, end, text, label, score."""
    tables = []
    for path in partition.entity_files:
        names = pq.read_schema(path, filesystem=fs).names
        missing = [c for c in ENTITY_COLUMNS if c not in names]
        if missing:
            raise PartitionError(
                f"{path}: entities need columns {ENTITY_COLUMNS}; missing {missing} "
                f"(columns are {names})"
            )
        table = pq.read_table(
            path, filesystem=fs, columns=[c for c in ENTITY_INPUT_SCHEMA.names if c in names]
        )
        if "score" not in names:
            table = table.append_column("score", pa.array([1.0] * table.num_rows, pa.float32()))
        tables.append(table.select(ENTITY_INPUT_SCHEMA.names).cast(ENTITY_INPUT_SCHEMA))
    return pa.concat_tables([ENTITY_INPUT_SCHEMA.empty_table(), *tables])


def read_document_ids(fs: pafs.FileSystem, partition: Partition, entities: pa.Table) -> pa.Array:
    """The partition's documents: `ok` rows of its documents files, else its entities' ids."""
    if not partition.document_files:
        return pc.unique(entities.column("doc_id").combine_chunks())
    tables = []
    for path in partition.document_files:
        names = pq.read_schema(path, filesystem=fs).names
        if "doc_id" not in names or "status" not in names:
            raise PartitionError(
                f"{path}: documents need columns doc_id and status (columns are {names})"
            )
        tables.append(pq.read_table(path, filesystem=fs, columns=["doc_id", "status"]))
    documents = pa.concat_tables(tables)
    ok = documents.filter(pc.equal(documents.column("status"), "ok"))
    return pc.unique(pc.cast(ok.column("doc_id"), pa.string()).combine_chunks())
