"""JSON Lines corpora (plain or gzip): one JSON object per line, read in file order."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from openmed_ray.errors import DataFormatError, OpenMedError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")


def jsonl_files(source: str | Path) -> list[Path]:
    """The file itself, or a directory's *.jsonl and *.jsonl.gz files in name order."""
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise OpenMedError(f"corpus source {source} does not exist")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(JSONL_SUFFIXES))
    if not files:
        raise OpenMedError(f"corpus source {source} holds no *.jsonl or *.jsonl.gz files")
    return files


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for every non-blank line; a malformed line names file and line."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(path, number, f"not valid JSON: {exc.msg}") from None
            if not isinstance(record, dict):
                raise DataFormatError(path, number, "expected a JSON object per line")
            yield number, record
