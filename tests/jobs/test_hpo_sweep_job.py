"""`ray job submit` of jobs/hpo_sweep.py: a sweep stopped mid-way resumes with --resume,
without rerunning finished trials."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from openmed_ray.hpo.sweep import EXPERIMENT

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
MAX_EPOCHS = 3


def ray(address: str, verb: str, *args: str) -> subprocess.CompletedProcess:
    """`ray job VERB --address ADDRESS ARGS...`"""
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": address}
    return subprocess.run(
        [ray_cli, "job", verb, "--address", address, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def job_status(address: str, job_id: str) -> str:
    """The job's status from the head's jobs API: polled each second, so not through the
    `ray` CLI, whose start-up (about a CPU-second) would compete with the sweep it watches."""
    with urllib.request.urlopen(f"{address}/api/jobs/{job_id}", timeout=30) as response:
        return json.load(response)["status"]


def finished_trials(experiment: Path) -> dict[str, int]:
    """Trial directory -> number of epoch results, for trials that ran all their epochs."""
    finished = {}
    for result in experiment.glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if lines and lines[-1].get("training_iteration") == MAX_EPOCHS:
            finished[result.parent.name] = len(lines)
    return finished


def test_a_stopped_sweep_job_resumes_without_rerunning_finished_trials(
    ray_head, tiny_backbone, tiny_data_root, tmp_path
):
    output = tmp_path / "sweep"
    sweep = [
        sys.executable,
        "jobs/hpo_sweep.py",
        "--dataset",
        "NCBI-disease",
        "--backbone",
        str(tiny_backbone),
        "--data-root",
        str(tiny_data_root),
        "--output",
        str(output),
        "--trials",
        "4",
        "--concurrency",
        "1",
        "--max-epochs",
        str(MAX_EPOCHS),
        "--seed",
        "1",
    ]
    job_id = f"sweep-{uuid.uuid4().hex[:8]}"
    started = ray(ray_head, "submit", "--no-wait", "--submission-id", job_id, "--", *sweep)
    assert started.returncode == 0, started.stdout + started.stderr
    experiment = output / "tune" / EXPERIMENT
    deadline = time.time() + 300
    while not finished_trials(experiment):
        status = job_status(ray_head, job_id)
        assert status in {"PENDING", "RUNNING"}, status
        assert time.time() < deadline, "no trial finished in time"
        time.sleep(1)
    stopped = ray(ray_head, "stop", job_id)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    before = finished_trials(experiment)
    assert not (output / "sweep.json").exists()

    resumed = ray(ray_head, "submit", "--", *sweep, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = json.loads((output / "sweep.json").read_text())
    assert len(summary["trials"]) == 4
    after = finished_trials(experiment)
    for trial, results in before.items():
        assert after[trial] == results, f"{trial} was rerun"
