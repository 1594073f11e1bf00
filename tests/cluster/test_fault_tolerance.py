"""Losing a worker node of a real multi-node Ray cluster mid-annotation and mid-sweep.

The cluster is `ray.cluster_utils.Cluster` (via benchmarks/fault_tolerance.py, which the
benchmark shares): a head and 2 worker nodes, each its own raylet with its own object store,
workers and agents, all on 127.0.0.1 with free ports. We chose it over `cluster/local.sh`
because it is as faithful where it matters (separate raylets, drivers in other processes
joining by address, a node's processes SIGKILLed at once) and better for a test: ports are
picked free instead of fixed (tests run beside other Ray instances), each node's processes
are known by pid so only the killed node's processes are signalled, and its reaper stops
every node it started even when the test process dies.

The drivers are `python -m openmed_ray.cli VERB --address ADDRESS` subprocesses, as a job's
driver is. Each scenario waits for real progress (document parts on disk; a finished trial)
and for a worker node to run the work it is about to lose, then kills that node. The two
scenarios share one cluster (starting one costs tens of seconds on a loaded machine); each
first tops it up to 2 worker nodes.
"""

import pytest

from benchmarks.fault_tolerance import (
    annotate_args,
    annotate_clean,
    annotate_losing_a_node,
    local_cluster,
    sweep_losing_a_node,
    verify_annotations,
)
from tests.annotate.conftest import write_corpus
from tests.conftest import make_tiny_dataset, start_local_ray

pytestmark = pytest.mark.slow
DOCS = 3000
# Long documents (about 200 wordpieces, 2 windows of the tiny model): with 2-sentence ones the
# map stage lasted about 10 s on any machine, and on a fast one it ended before the first part
# was written, so there was no mid-run moment to kill a node.
SENTENCES_PER_DOC = 24
MAX_EPOCHS = 3
TIMEOUT = 600  # per driver run; a contended 2-core machine can be several times slower


@pytest.fixture(scope="module")
def cluster():
    # A Ray driver in this process (the session's local Ray) terminates about a minute after
    # a cluster started in-process beside it is stopped; so it is stopped first and restarted
    # after (a driver started after the cluster is gone is unaffected).
    import ray

    was_running = ray.is_initialized()
    ray.shutdown()
    with local_cluster(workers=2) as started:
        yield started
    if was_running:
        start_local_ray()


def test_annotation_losing_a_worker_node_ends_with_every_document_once(
    cluster, tiny_bundle, tmp_path
):
    corpus = write_corpus(tmp_path / "corpus", n=DOCS, files=4, sentences=SENTENCES_PER_DOC)
    # 15 part pairs: the kill after the first lands with most of the work still to do.
    layout = ["--docs-per-batch", "50", "--rows-per-file", "200", "--threads-per-actor", "1"]
    clean, out = tmp_path / "clean", tmp_path / "out"
    annotate_clean(
        annotate_args(corpus, clean, str(tiny_bundle), *layout), tmp_path / "clean.log", TIMEOUT
    )
    cluster.add_workers(2)
    killed = len(cluster.killed)
    run = annotate_losing_a_node(
        cluster,
        annotate_args(corpus, out, str(tiny_bundle), *layout),
        out,
        tmp_path / "annotate.log",
        TIMEOUT,
        min_parts=1,
    )
    assert len(cluster.killed) == killed + 1
    assert 0 < run["event"]["docs_written_before_kill"] < DOCS, run  # the kill landed mid-run

    verified = verify_annotations(out, clean, [f"d{i}" for i in range(DOCS)])
    assert verified["docs_out"] == DOCS and verified["duplicates"] == 0, verified
    assert verified["lost"] == 0 and verified["duplicate_entities"] == 0, verified
    assert verified["entities"] > 0 and verified["entities_equal_to_clean_run"], verified


def test_sweep_losing_a_worker_node_finishes_without_rerunning_finished_trials(
    cluster, tiny_backbone, tmp_path
):
    # Enough sentences for a trial epoch to take a few seconds, so a kill lands mid-trial.
    data_root = make_tiny_dataset(tmp_path / "data", sizes=(4000, 40, 40))
    output = tmp_path / "sweep"
    args = [
        "--dataset", "NCBI-disease", "--backbone", str(tiny_backbone), "--data-root",
        str(data_root), "--output", str(output), "--trials", "4", "--concurrency", "2",
        "--max-epochs", str(MAX_EPOCHS), "--seed", "0",
        # The final training is not what a node loss tests: one short epoch is enough.
        "--final-epochs", "1", "--final-train-sentences", "400",
    ]  # fmt: skip
    cluster.add_workers(2)
    killed = len(cluster.killed)
    run = sweep_losing_a_node(cluster, args, output, MAX_EPOCHS, tmp_path / "sweep.log", TIMEOUT)
    assert len(cluster.killed) == killed + 1
    assert run["event"]["trials_finished_before_kill"] >= 1, run
    assert run["trials"] == 4, run
    assert run["sweep_resumed_trials_rerun"] == [], run
    # The trial on the lost node went on in a new process, from its checkpoint: its epochs
    # continue where they stopped, and no trial ever repeats an epoch.
    assert run["event"]["killed_trial"] in run["trials_restarted"], run
    assert len(run["killed_trial_epochs"]) > run["event"]["killed_trial_epochs_before_kill"], run
    assert run["trials_repeating_an_epoch"] == [], run
    assert 0 <= run["final_test_f1"] <= 1, run
