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
from tests.conftest import make_tiny_dataset

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


def jobs_api(address: str, path: str, method: str = "GET") -> dict:
    """The head's jobs API, not the `ray` CLI: it is polled often, and the CLI's start-up
    (about a CPU-second) would compete with the sweep it watches and delay a stop."""
    request = urllib.request.Request(f"{address}/api/jobs/{path}", method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def trial_results(experiment: Path) -> dict[str, list[dict]]:
    """Trial id -> its epoch results in Tune's result.json, those of every driver."""
    trials = {}
    for result in experiment.glob("*/result.json"):
        text = result.read_text()
        complete = text[: text.rfind("\n") + 1]  # Tune may be writing the last line
        lines = [json.loads(line) for line in complete.splitlines() if line.strip()]
        if lines:
            trials[lines[-1]["trial_id"]] = lines
    return trials


def test_a_stopped_sweep_job_resumes_without_rerunning_finished_trials(
    ray_head, tiny_backbone, tmp_path
):
    # Epochs of a few seconds, so the job stops with a trial between two of them.
    data_root = make_tiny_dataset(tmp_path / "data", sizes=(3000, 40, 40))
    output = tmp_path / "sweep"
    sweep = [
        sys.executable,
        "jobs/hpo_sweep.py",
        "--dataset",
        "NCBI-disease",
        "--backbone",
        str(tiny_backbone),
        "--data-root",
        str(data_root),
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
        # The final training is not what a resume tests: one short epoch is enough.
        "--final-epochs",
        "1",
        "--final-train-sentences",
        "400",
    ]
    job_id = f"sweep-{uuid.uuid4().hex[:8]}"
    started = ray(ray_head, "submit", "--no-wait", "--submission-id", job_id, "--", *sweep)
    assert started.returncode == 0, started.stdout + started.stderr
    experiment = output / "tune" / EXPERIMENT
    deadline = time.time() + 300
    # Stop once a trial has finished and another is between two epochs: that one goes on
    # from its checkpoint under the second driver.
    while True:
        results = trial_results(experiment)
        lengths = sorted(len(lines) for lines in results.values())
        if lengths and lengths[-1] == MAX_EPOCHS and 0 < lengths[0] < MAX_EPOCHS:
            break
        assert jobs_api(ray_head, job_id)["status"] in {"PENDING", "RUNNING"}
        assert time.time() < deadline, "no trial finished in time"
        time.sleep(0.2)
    assert jobs_api(ray_head, f"{job_id}/stop", method="POST")["stopped"]
    while jobs_api(ray_head, job_id)["status"] != "STOPPED":
        assert time.time() < deadline, "the job did not stop"
        time.sleep(0.2)
    before = {
        t: lines for t, lines in trial_results(experiment).items() if len(lines) == MAX_EPOCHS
    }
    assert not (output / "sweep.json").exists()

    resumed = ray(ray_head, "submit", "--", *sweep, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = json.loads((output / "sweep.json").read_text())
    assert len(summary["trials"]) == 4
    after = trial_results(experiment)
    for trial, results in before.items():
        assert after[trial] == results, f"{trial} was rerun"
    # A trial ran epochs under both drivers, and the ledger holds all of them (the callback
    # of the second driver heard only the later ones).
    assert any(len({line["pid"] for line in lines}) == 2 for lines in after.values()), after
    ledger = json.loads((output / "trials.json").read_text())
    recorded = {t["trial_id"]: t["dev_f1_by_epoch"] for t in ledger["trials"]}
    assert recorded == {
        trial: [round(line["dev_f1"], 6) for line in lines] for trial, lines in after.items()
    }
