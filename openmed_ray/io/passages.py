"""DAPT passage corpora in Parquet: the schema, where the held-out split and the counts go,
and the checks a training corpus must pass before any Ray work starts.

    corpus.parquet            training passages
    corpus.heldout.parquet    held-out passages (perplexity)
    corpus.stats.json         what was read, dropped and written
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from openmed_ray.errors import OpenMedError
from openmed_ray.io.filesystem import resolve

PASSAGE_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("passage", pa.int32()),  # index of the passage within its document
        ("text", pa.string()),
        ("n_wordpieces", pa.int32()),  # special tokens included
        ("pmid", pa.string()),
        ("license", pa.string()),
        ("source", pa.string()),  # file the document came from
    ]
)
TEXT_TYPES = (pa.string(), pa.large_string())


class CorpusError(OpenMedError):
    """A passage corpus that cannot be trained on (missing, empty, no text column)."""


def _stem(output: str) -> str:
    return output[: -len(".parquet")] if output.endswith(".parquet") else output


def heldout_path(output: str) -> str:
    """`<stem>.heldout.parquet` beside the training passages."""
    return f"{_stem(output)}.heldout.parquet"


def stats_path(output: str) -> str:
    return f"{_stem(output)}.stats.json"


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def count_text_rows(uri: str, text_column: str) -> int:
    """Rows of a Parquet file or directory after checking its text column; errors name the file."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise CorpusError(f"corpus {uri} does not exist; build one with `openmed-ray corpus`")
    try:
        dataset = pads.dataset(path, filesystem=fs, format="parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorpusError(f"corpus {uri} is not readable as Parquet: {exc}") from None
    if not dataset.files:
        raise CorpusError(f"corpus {uri} holds no Parquet files")
    for file in sorted(dataset.files):
        schema = pads.dataset(file, filesystem=fs, format="parquet").schema
        if text_column not in schema.names:
            raise CorpusError(
                f"{file}: no text column {text_column!r}; columns are {schema.names}. "
                "Name the column with --text-column"
            )
        if schema.field(text_column).type not in TEXT_TYPES:
            raise CorpusError(
                f"{file}: column {text_column!r} has type {schema.field(text_column).type}; "
                "expected strings"
            )
    rows = dataset.count_rows()
    if rows == 0:
        raise CorpusError(f"corpus {uri} has no rows (an empty corpus cannot be trained on)")
    return rows


def read_texts(uri: str, text_column: str, limit: int | None = None) -> list[str]:
    """The first `limit` non-empty texts of a Parquet file or directory, in file order."""
    fs, path = resolve(uri)
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    texts: list[str] = []
    for batch in dataset.to_batches(columns=[text_column]):
        texts.extend(t for t in batch.column(0).to_pylist() if t and t.strip())
        if limit is not None and len(texts) >= limit:
            return texts[:limit]
    return texts
