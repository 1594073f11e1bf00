"""`ray job submit` of jobs/annotate_corpus.py against a real `ray start --head` cluster."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from openmed_ray.io.annotations import DOCUMENTS, read_parts
from tests.annotate.conftest import write_corpus

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def submit(address: str, *entrypoint: str) -> subprocess.CompletedProcess:
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": address}
    return subprocess.run(
        [ray_cli, "job", "submit", "--address", address, "--", sys.executable, *entrypoint],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_annotate_job_end_to_end(ray_head, tiny_bundle, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", n=150)
    out = tmp_path / "out"
    result = submit(
        ray_head,
        "jobs/annotate_corpus.py",
        "--input",
        str(corpus),
        "--output",
        str(out),
        "--adapters",
        str(tiny_bundle),
        "--threads-per-actor",
        "1",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in (result.stdout + result.stderr).lower()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["docs"] == 150 and summary["errors"] == 0 and summary["entities"] > 0
    assert len(read_parts(str(out), DOCUMENTS)) == 150


def test_failing_job_exits_non_zero_with_the_reason(ray_head, tmp_path):
    result = submit(
        ray_head,
        "jobs/annotate_corpus.py",
        "--input",
        str(tmp_path / "missing"),
        "--output",
        str(tmp_path / "out"),
        "--adapters",
        "nope",
    )
    assert result.returncode != 0
    assert "unknown adapter 'nope'" in result.stdout + result.stderr
