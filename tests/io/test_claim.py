"""Output claims on local disk and on S3 (moto on loopback): one owner, races, takeover."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from openmed_ray.config import ClaimConfig
from openmed_ray.io.claim import (
    OutputClaimedError,
    acquire_claim,
    read_claim,
)
from tests.conftest import claim_by_dead_process, start_claim_owner

# S3's LastModified has whole-second resolution, so a fresh heartbeat can look up to 1 s old.
FAST = ClaimConfig(heartbeat_seconds=0.2, stale_after_seconds=2.0)


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    request.getfixturevalue("s3_server")
    return "s3://corpus/out"


def test_one_owner_then_free_after_release(location):
    claim = acquire_claim(location, "run-a", purpose="annotate", takeover=False, config=FAST)
    with pytest.raises(OutputClaimedError, match="owned by annotate run run-a.*alive") as refused:
        acquire_claim(location, "run-b", purpose="annotate", takeover=True, config=FAST)
    assert refused.value.owner.run_id == "run-a"
    claim.release()
    state = read_claim(location)
    assert state.owner.run_id == "run-a" and state.released["outcome"] == "finished"
    with acquire_claim(location, "run-b", purpose="annotate", takeover=False, config=FAST) as b:
        assert b.generation == claim.generation + 1 and b.taken_over_from is None
    assert read_claim(location).released is not None


def test_heartbeat_keeps_a_live_owner_and_a_frozen_one_is_fenced_out(location):
    import signal

    owner = start_claim_owner(
        location, "run-a", heartbeat=FAST.heartbeat_seconds, stale=FAST.stale_after_seconds
    )
    try:
        time.sleep(2 * FAST.stale_after_seconds)  # heartbeats keep coming
        with pytest.raises(OutputClaimedError, match="alive"):
            acquire_claim(location, "run-b", purpose="annotate", takeover=True, config=FAST)
        owner.send_signal(signal.SIGSTOP)  # frozen: alive, but no more heartbeats
        time.sleep(FAST.stale_after_seconds + 1.5)
        state = read_claim(location)
        assert "heartbeat was" in (state.gone_reason(FAST.stale_after_seconds) or "")
        with pytest.raises(OutputClaimedError, match="stopped without releasing.*--resume"):
            acquire_claim(location, "run-b", purpose="annotate", takeover=False, config=FAST)
        taken = acquire_claim(location, "run-b", purpose="annotate", takeover=True, config=FAST)
        assert taken.taken_over_from.run_id == "run-a"
        # The frozen owner wakes up: its fence stops it before it writes anything.
        owner.send_signal(signal.SIGCONT)
        owner.stdin.write("verify\n")
        owner.stdin.flush()
        answer = owner.stdout.readline()
        assert answer.startswith("lost:") and "run-a no longer owns this output" in answer
        taken.fence.verify()
        taken.release()
    finally:
        owner.kill()
        owner.wait()


def test_owner_whose_process_is_gone_is_taken_over_at_once(location):
    claim_by_dead_process(location, "dead-run")
    state = read_claim(location)
    assert state.owner.run_id == "dead-run" and state.released is None
    assert "no longer exists" in state.gone_reason(ClaimConfig().stale_after_seconds)
    with pytest.raises(OutputClaimedError, match="dead-run.*stopped without releasing"):
        acquire_claim(location, "next", purpose="annotate", takeover=False, config=ClaimConfig())
    with acquire_claim(
        location, "next", purpose="annotate", takeover=True, config=ClaimConfig()
    ) as claim:
        assert claim.taken_over_from.run_id == "dead-run"


RACE = """
import json, os, sys, time
from openmed_ray.config import ClaimConfig
from openmed_ray.io.claim import OutputClaimedError, acquire_claim
location, run_id, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start_at - time.time()))
try:
    claim = acquire_claim(location, run_id, purpose="annotate", takeover=True, config=ClaimConfig())
    print(json.dumps({"won": run_id, "generation": claim.generation}), flush=True)
    time.sleep(3)  # held while the others try: a late one must not see it free
    claim.release()
except OutputClaimedError as exc:
    print(json.dumps({"lost": run_id, "owner": exc.owner.run_id if exc.owner else None}))
"""


def race(location: str, runners: int) -> list[dict]:
    """`runners` processes try to claim `location` at the same instant."""
    import json

    start_at = time.time() + 3  # after every interpreter has imported what it needs
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, location, f"r{k}", str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(runners)
    ]
    outcomes = []
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0, out
        outcomes.append(json.loads(out.strip().splitlines()[0]))
    return outcomes


def test_racing_runs_exactly_one_wins_fresh_and_takeover(location):
    outcomes = race(location, 4)
    winners = [o["won"] for o in outcomes if "won" in o]
    assert len(winners) == 1, outcomes
    assert all(o["owner"] == winners[0] for o in outcomes if "lost" in o), outcomes
    # All of them race again to take over the same dead owner: still exactly one.
    claim_by_dead_process(location, "dead-run")
    generation = read_claim(location).generation
    outcomes = race(location, 4)
    won = [o for o in outcomes if "won" in o]
    assert len(won) == 1 and won[0]["generation"] == generation + 1, outcomes


def test_store_ignoring_conditional_writes_is_refused(tmp_path, s3_server, monkeypatch):
    from openmed_ray.io import claim as claim_module

    monkeypatch.setattr(claim_module._S3Store, "create", lambda self, name, data: True)
    with pytest.raises(claim_module.ConditionalWriteUnsupportedError, match="If-None-Match"):
        acquire_claim("s3://corpus/x", "r", purpose="annotate", takeover=False, config=FAST)
