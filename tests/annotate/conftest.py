import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openmed_ray.config import AnnotateConfig
from tests.conftest import synthetic_sentence

REPO = Path(__file__).resolve().parents[2]


def make_texts(n: int, seed: int = 0, sentences: int = 2) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(" ".join(synthetic_sentence(rng)[0]) + "." for _ in range(sentences))
        for _ in range(n)
    ]


def write_corpus(directory, n: int = 240, files: int = 2, seed: int = 0, sentences: int = 2):
    """n documents of `sentences` sentences with ids d0..d{n-1}, over several Parquet files."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = make_texts(n, seed, sentences)
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


def run_cli(args, **kwargs):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        # --address local: a fresh Ray owned by this process group, never another instance.
        [sys.executable, "-m", "openmed_ray.cli", "annotate", "--address", "local", *args],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def annotate_config(corpus, output, bundle, **overrides) -> AnnotateConfig:
    """Small batches and parts, one thread: many parts from a few hundred documents."""
    values = dict(
        input=str(corpus),
        output=str(output),
        adapters=(str(bundle),),
        docs_per_batch=40,
        rows_per_file=80,
        threads_per_actor=1,
    )
    values.update(overrides)
    return AnnotateConfig(**values)


def cli_args(corpus, out, bundle) -> list[str]:
    """`openmed-ray annotate` flags: parts of 100 documents, one thread."""
    return [
        "--input", str(corpus),
        "--output", str(out),
        "--adapters", str(bundle),
        "--docs-per-batch", "50",
        "--rows-per-file", "100",
        "--threads-per-actor", "1",
    ]  # fmt: skip
