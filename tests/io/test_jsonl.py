"""JSON Lines corpora: files of a directory, gzip, errors that name the line."""

import gzip
import json

import pytest

from openmed_ray.errors import DataFormatError, OpenMedError
from openmed_ray.io.jsonl import iter_jsonl, jsonl_files


def test_directory_files_plain_and_gzip_in_name_order(tmp_path):
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "two"}) + "\n\n")
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as handle:
        handle.write(json.dumps({"text": "one"}) + "\n")
    (tmp_path / "notes.txt").write_text("ignored")
    files = jsonl_files(tmp_path)
    assert [f.name for f in files] == ["a.jsonl.gz", "b.jsonl"]
    assert [r["text"] for f in files for _, r in iter_jsonl(f)] == ["one", "two"]
    assert jsonl_files(files[1]) == [files[1]]


def test_errors_name_the_source_and_line(tmp_path):
    with pytest.raises(OpenMedError, match="does not exist"):
        jsonl_files(tmp_path / "missing")
    with pytest.raises(OpenMedError, match="no \\*.jsonl"):
        jsonl_files(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataFormatError, match="bad.jsonl:2: not valid JSON"):
        list(iter_jsonl(bad))
    bad.write_text('["a list"]\n')
    with pytest.raises(DataFormatError, match=":1: expected a JSON object"):
        list(iter_jsonl(bad))
