"""Passage corpora: derived paths and the checks a training corpus must pass."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openmed_ray.io.passages import (
    CorpusError,
    count_text_rows,
    heldout_path,
    read_texts,
    stats_path,
)


def test_derived_paths():
    assert heldout_path("runs/corpus.parquet") == "runs/corpus.heldout.parquet"
    assert stats_path("s3://b/corpus.parquet") == "s3://b/corpus.stats.json"
    assert heldout_path("runs/passages") == "runs/passages.heldout.parquet"


def test_text_column_rows_and_texts(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["a b", None, " ", "c"], "n": [1, 2, 3, 4]}), path)
    assert count_text_rows(str(path), "text") == 4
    assert read_texts(str(path), "text") == ["a b", "c"]  # null and blank texts are skipped
    assert read_texts(str(path), "text", limit=1) == ["a b"]


def test_bad_corpora_fail_with_the_reason(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        count_text_rows(str(tmp_path / "nope.parquet"), "text")
    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.table({"body": ["x"]}), missing)
    with pytest.raises(CorpusError, match="no text column 'text'.*--text-column"):
        count_text_rows(str(missing), "text")
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), numbers)
    with pytest.raises(CorpusError, match="expected strings"):
        count_text_rows(str(numbers), "text")
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), empty)
    with pytest.raises(CorpusError, match="no rows"):
        count_text_rows(str(empty), "text")
