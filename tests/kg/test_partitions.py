"""Partition discovery in the supported layouts, and content hashes."""

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openmed_ray.kg.partitions import (
    PartitionError,
    content_hash,
    discover_partitions,
    read_document_ids,
    read_entities,
)
from tests.kg.conftest import entity_rows, write_partition


def test_one_annotate_output_per_day(tmp_path):
    write_partition(tmp_path, "2026-01-02", ["d1", "d2"])
    write_partition(tmp_path, "2026-01-01", ["d3"])
    (tmp_path / ".staging").mkdir()  # hidden: ignored
    fs, partitions = discover_partitions(str(tmp_path))
    assert [p.name for p in partitions] == ["2026-01-01", "2026-01-02"]
    day = partitions[1]
    assert [len(day.entity_files), len(day.document_files)] == [1, 1]
    entities = read_entities(fs, day)
    assert set(entities.column("doc_id").to_pylist()) == {"d1", "d2"}
    assert sorted(read_document_ids(fs, day, entities).to_pylist()) == ["d1", "d2"]


def test_each_part_of_a_single_annotate_output_is_a_partition(tmp_path):
    write_partition(tmp_path, "out", ["d1", "d4"], part="part-a.parquet")
    write_partition(tmp_path, "out", ["d2"], part="part-b.parquet")
    fs, partitions = discover_partitions(str(tmp_path / "out"))
    assert [p.name for p in partitions] == ["part-a.parquet", "part-b.parquet"]
    first = partitions[0]
    # d4 has no entity but is an 'ok' document: it still counts
    assert sorted(read_document_ids(fs, first, read_entities(fs, first)).to_pylist()) == [
        "d1",
        "d4",
    ]


def test_plain_entity_files_without_documents(tmp_path):
    table = pa.Table.from_pylist(entity_rows("d1")).drop_columns(["score"])
    pq.write_table(table, tmp_path / "batch-1.parquet")
    (tmp_path / "batch-2").mkdir()
    pq.write_table(pa.Table.from_pylist(entity_rows("d3")), tmp_path / "batch-2" / "x.parquet")
    fs, partitions = discover_partitions(str(tmp_path))
    assert [p.name for p in partitions] == ["batch-1.parquet", "batch-2"]
    entities = read_entities(fs, partitions[0])
    assert entities.column("score").to_pylist() == [1.0] * len(entity_rows("d1"))
    assert read_document_ids(fs, partitions[0], entities).to_pylist() == ["d1"]


def test_missing_columns_and_directories_are_named(tmp_path):
    pq.write_table(pa.table({"doc_id": ["d1"], "begin": [0]}), tmp_path / "bad.parquet")
    fs, partitions = discover_partitions(str(tmp_path))
    with pytest.raises(PartitionError, match="bad.parquet.*missing"):
        read_entities(fs, partitions[0])
    with pytest.raises(PartitionError, match="does not exist"):
        discover_partitions(str(tmp_path / "nowhere"))


def test_content_hash_follows_content_not_location(tmp_path):
    write_partition(tmp_path / "a", "day", ["d1"])
    write_partition(tmp_path / "b", "day", ["d1"])
    fs, (first,) = discover_partitions(str(tmp_path / "a"))
    _, (moved,) = discover_partitions(str(tmp_path / "b"))
    digest, records = content_hash(fs, first, {})
    assert content_hash(fs, moved, {})[0] == digest
    # unchanged size and mtime: the recorded file hash is trusted, not recomputed
    faked = {path: {**r, "sha256": "0" * 64} for path, r in records.items()}
    assert content_hash(fs, first, faked)[0] != digest
    write_partition(tmp_path / "a", "day", ["d1", "d2"])
    for path in records:
        os.utime(path, ns=(1, 1))  # a new stamp forces a re-read
    assert content_hash(fs, first, records)[0] != digest
