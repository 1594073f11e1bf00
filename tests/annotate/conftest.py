import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import synthetic_sentence


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(synthetic_sentence(rng)[0]) + ". " + " ".join(synthetic_sentence(rng)[0]) + "."
        for _ in range(n)
    ]


def write_corpus(directory, n: int = 240, files: int = 2, seed: int = 0):
    """n documents with ids d0..d{n-1}, split over several Parquet files."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = make_texts(n, seed)
    per_file = -(-n // files)
    for k in range(files):
        part = slice(k * per_file, (k + 1) * per_file)
        ids = [f"d{i}" for i in range(n)][part]
        pq.write_table(
            pa.table({"doc_id": ids, "text": texts[part]}), directory / f"in-{k}.parquet"
        )
    return directory


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus")
