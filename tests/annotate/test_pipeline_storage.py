"""One writer per annotation output, and storage faults mid-run: concurrent real processes,
an S3 endpoint (moto on loopback) that dies and comes back, a local disk that fills up."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import pyarrow.compute as pc
import pytest

from openmed_ray.annotate.pipeline import annotate_corpus
from openmed_ray.config import AnnotateConfig, ClaimConfig
from openmed_ray.io.annotations import DOCUMENTS, ENTITIES, list_parts, read_parts
from openmed_ray.io.claim import OutputClaimedError, acquire_claim, read_claim
from tests.annotate.conftest import annotate_config, cli_args, run_cli, write_corpus

pytestmark = pytest.mark.slow


def assert_each_document_once(out, n: int) -> None:
    documents = read_parts(str(out), DOCUMENTS)
    ids = documents.column("doc_id").to_pylist()
    assert len(ids) == len(set(ids)) == n
    entities = read_parts(str(out), ENTITIES)
    assert entities.num_rows == pc.sum(documents.column("n_entities")).as_py()
    keys = list(
        zip(*(entities.column(c).to_pylist() for c in ("doc_id", "start", "end")), strict=True)
    )
    assert len(keys) == len(set(keys))


def test_two_concurrent_runs_on_one_output_exactly_one_writes(tiny_bundle, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", n=600, files=2)
    out = tmp_path / "out"
    args = cli_args(corpus, out, tiny_bundle)
    first, second = run_cli(args), run_cli(args)  # no --resume, same instant
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    codes = [first.returncode, second.returncode]
    assert sorted(codes) == [0, 2], outputs
    summary = json.loads((out / "summary.json").read_text())
    refused = outputs[codes.index(2)]
    assert f"annotate run {summary['run_id']}" in refused, refused
    assert summary["docs"] == 600 and summary["claim"]["generation"] == 1
    assert_each_document_once(out, 600)
    # The owner released its claim when it finished; a third run without --resume is told
    # the output is complete, not that someone owns it.
    third = run_cli(args)
    output, _ = third.communicate(timeout=600)
    assert third.returncode == 2 and "already holds annotations" in output, output


def config(corpus, out, bundle, **overrides) -> AnnotateConfig:
    """Parts of 100 documents, and a claim that goes stale in seconds."""
    claim = ClaimConfig(heartbeat_seconds=1.0, stale_after_seconds=5.0)
    values = {"docs_per_batch": 50, "rows_per_file": 100, "claim": claim, **overrides}
    return annotate_config(corpus, out, bundle, **values)


def test_a_live_owner_refuses_every_other_run_even_with_resume(
    ray_local, tiny_bundle, tmp_path, s3_server
):
    corpus = write_corpus(tmp_path / "corpus", n=20, files=1)
    for out in (str(tmp_path / "out"), "s3://corpus/out"):
        held = acquire_claim(
            out, "other01", purpose="annotate", takeover=False, config=ClaimConfig()
        )
        for resume in (False, True):
            with pytest.raises(OutputClaimedError, match="owned by annotate run other01"):
                annotate_corpus(config(corpus, out, tiny_bundle, resume=resume))
        assert list_parts(out, DOCUMENTS) == []
        held.release()
        assert annotate_corpus(config(corpus, out, tiny_bundle))["docs"] == 20


class Run(threading.Thread):
    """annotate_corpus in a background thread of this process, keeping its result or error."""

    def __init__(self, config: AnnotateConfig) -> None:
        super().__init__(daemon=True)
        self.config, self.summary, self.error = config, None, None
        self.start()

    def run(self) -> None:
        try:
            self.summary = annotate_corpus(self.config)
        except Exception as exc:
            self.error = exc

    def running(self) -> bool:
        return self.is_alive()


class CliRun:
    """`openmed-ray annotate` in its own process (runs that fail: the error is its exit)."""

    def __init__(self, tmp_path, corpus, out, bundle, **settings) -> None:
        import yaml

        settings_file = tmp_path / f"settings-{abs(hash(str(out)))}.yaml"
        settings_file.write_text(yaml.safe_dump(settings))
        self.process = run_cli([*cli_args(corpus, out, bundle), "--config", str(settings_file)])

    def running(self) -> bool:
        return self.process.poll() is None

    def finish(self) -> tuple[int, str]:
        output, _ = self.process.communicate(timeout=600)
        return self.process.returncode, output


def wait_for_parts(out: str, run, parts: int = 2, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and run.running():
        if len(list_parts(out, DOCUMENTS)) >= parts:
            return
        time.sleep(0.2)
    raise AssertionError(f"the run ended or stalled before {parts} parts were written")


def test_s3_outage_mid_run_is_retried_or_fails_clearly_and_resume_completes(
    ray_local, tiny_bundle, tmp_path, s3_server
):
    docs = 2500
    corpus = write_corpus(tmp_path / "corpus", n=docs, files=2)

    # A short outage is absorbed by the per-part retries: the run finishes by itself.
    # Parts of 250 documents in this process (each part costs a few S3 requests).
    part = {"rows_per_file": 250}
    short = Run(config(corpus, "s3://corpus/short", tiny_bundle, write_backoff_seconds=1.0, **part))
    wait_for_parts("s3://corpus/short", short)
    s3_server.stop()
    time.sleep(2)
    s3_server.start()
    short.join(600)
    assert short.error is None, short.error
    assert_each_document_once("s3://corpus/short", docs)

    # A long one outlasts them: the run exits non-zero with an error naming the output and
    # the way on, and --resume afterwards writes every document exactly once.
    out = "s3://corpus/long"
    long = CliRun(tmp_path, corpus, out, tiny_bundle, write_attempts=2, write_backoff_seconds=0.5)
    wait_for_parts(out, long)
    s3_server.stop()
    code, output = long.finish()
    s3_server.start()
    assert code == 2, output
    assert f"annotate: error: annotating {corpus} into {out} stopped" in output, output
    assert "--resume" in output
    committed = read_parts(out, DOCUMENTS).num_rows
    assert 0 < committed < docs
    # The stopped run could not release its claim (the store was down) and its process is
    # gone, so --resume takes the claim over.
    stopped = read_claim(out)
    assert stopped.released is None
    summary = annotate_corpus(config(corpus, out, tiny_bundle, resume=True, **part))
    assert summary["claim"]["taken_over_from"] == stopped.owner.run_id
    assert summary["this_run"]["docs"] <= docs - committed + 250
    assert_each_document_once(out, docs)


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs: a real filesystem that really fills up (needs root; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory) -> None:
    """Write until the filesystem is full."""
    block = b"\0" * (1 << 16)
    with open(directory / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(block)
        except OSError:
            pass


def test_full_disk_mid_run_fails_clearly_and_resume_completes(
    ray_local, tiny_bundle, tmp_path, small_disk
):
    docs = 2500  # 25 parts: the fault lands with most of them still to write
    corpus = write_corpus(tmp_path / "corpus", n=docs, files=2)
    out = small_disk / "out"
    run = CliRun(tmp_path, corpus, out, tiny_bundle)
    wait_for_parts(str(out), run)
    fill(small_disk)
    code, output = run.finish()
    assert code == 2, output
    assert "No space left on device" in output and f"into {out} stopped" in output, output
    # Every listed part reads in full (a failed write leaves at most a hidden temporary).
    committed = read_parts(str(out), DOCUMENTS).num_rows
    assert 0 < committed < docs

    (small_disk / "filler").unlink()
    summary = annotate_corpus(config(corpus, out, tiny_bundle, resume=True))
    assert summary["claim"]["generation"] == 2
    assert summary["this_run"]["docs"] <= docs - committed + 100
    for kind in (ENTITIES, DOCUMENTS):  # resume removed any temporaries of failed writes
        assert not [p.name for p in (out / kind).iterdir() if p.name.startswith(".")]
    assert_each_document_once(out, docs)
    shutil.rmtree(out)
