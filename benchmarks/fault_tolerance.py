"""Losing a node of a real multi-node Ray cluster, mid-annotation and mid-sweep.

    python benchmarks/fault_tolerance.py --docs 3000 --json benchmarks/results/fault_tolerance.json

On this machine: a head (1 CPU) and 2 worker nodes (2 CPUs each; separate raylets, started with
`ray.cluster_utils.Cluster`), and drivers that are separate processes joining the cluster by
address, as a job's driver does. Then:
  1. annotation: `openmed-ray annotate` with the shipped MiniLM `disease` adapter over `--docs`
     PMC-OA abstracts; once some parts are written, the worker node running an annotation
     actor is killed (SIGKILL of every process of that node, as when a machine dies). The run
     finishes, or a `--resume` rerun finishes it. Baseline: a clean single-node run (a fresh
     local Ray, nothing killed) over the same documents; the entities must be equal.
  2. sweep: `openmed-ray tune` (MiniLM, LoRA, capped NCBI-disease, `--trials` trials at
     concurrency 2, no ASHA pruning); once a trial has finished, the worker node running a
     trial that has checkpointed an epoch and has epochs to go is killed. The sweep finishes
     (Tune restarts that trial from its last epoch checkpoint), or a `--resume` rerun does;
     no finished trial may have been rerun, and no trial may repeat an epoch.

The same functions drive tests/cluster/test_fault_tolerance.py with tiny models.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from benchmarks.common import RESULTS, write_results  # noqa: E402
from openmed_ray.hpo.sweep import EXPERIMENT  # noqa: E402
from openmed_ray.io.annotations import DOCUMENTS, ENTITIES, list_parts, read_parts  # noqa: E402
from openmed_ray.runtime import free_port  # noqa: E402

# The process title Ray gives an annotation actor.
ANNOTATION_ACTOR = "MapWorker(MapBatches(AnnotateActor))"
SCORE_TOLERANCE = 1e-4
# Ray resolves 127.0.0.1 in an address to the machine's interface address unless this says
# the host is not part of a multi-machine cluster; then a driver joins over loopback too.
LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
}


# ------------------------------------------------------------------ the cluster
@dataclass
class LocalCluster:
    """A head and worker nodes on this machine, each a separate raylet (own processes)."""

    cluster: Any  # ray.cluster_utils.Cluster
    node_args: dict[str, Any]
    workers: list = field(default_factory=list)  # ray._private.node.Node
    killed: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.cluster.address

    def worker_hosting(self, match: Callable[[Any], bool]):
        """A worker node running a live process (psutil.Process) that `match`es, or None."""
        import psutil

        for node in self.workers:
            for process in _descendants(node):
                try:
                    if match(process):
                        return node
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        return None

    def add_workers(self, count: int) -> None:
        """Start worker nodes until `count` are alive (e.g. to replace a killed one)."""
        while len(self.workers) < count:
            self.workers.append(self.cluster.add_node(**self.node_args))
        self.cluster.wait_for_nodes(timeout=120)

    def kill(self, node) -> None:
        """Kill every process of a node at once, as when its machine dies: the workers it
        runs first (else one could finish a write after its raylet is gone), then the raylet
        and its agents."""
        import psutil

        for process in _descendants(node):
            with suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)
        self.killed.append(node.node_id)


def _raylet(node):
    import psutil
    from ray._private import ray_constants

    return psutil.Process(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)


def _descendants(node) -> list:
    import psutil

    try:
        return _raylet(node).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@contextmanager
def local_cluster(
    workers: int = 2, head_cpus: int = 1, worker_cpus: int = 2
) -> Iterator[LocalCluster]:
    """Start a head and `workers` worker nodes; stop exactly these nodes afterwards.

    Every node listens on 127.0.0.1 with ports picked free, so the cluster neither reaches
    beyond this machine nor clashes with other Ray instances on it. With several Ray
    instances on one machine, Ray code that looks its cluster up (Ray Train's placement
    group cleaner queries the state API of the "current cluster") follows $RAY_ADDRESS, else
    the machine-wide current-cluster file. So this cluster's processes get $RAY_ADDRESS, and
    the file, which Cluster() points at this cluster, is given back at once: other Ray
    instances on the machine must never find this one.
    """
    from ray._common.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    address = f"127.0.0.1:{free_port()}"
    common = {
        "node_ip_address": "127.0.0.1",
        "object_store_memory": 300 * 1024**2,
        "include_dashboard": False,
        "env_vars": {**LOOPBACK_ENV, "RAY_ADDRESS": address},
    }
    address_file = Path(get_ray_address_file(None))
    previous = address_file.read_text() if address_file.exists() else None

    def give_back_address_file() -> None:
        if address_file.exists() and address_file.read_text().strip() == address:
            if previous is None:
                address_file.unlink()
            else:
                address_file.write_text(previous)

    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                **common,
                "num_cpus": head_cpus,
                "gcs_server_port": int(address.rsplit(":", 1)[1]),
                "dashboard_port": free_port(),
                "dashboard_agent_listen_port": free_port(),
            },
        )
        give_back_address_file()
        handle = LocalCluster(cluster, {**common, "num_cpus": worker_cpus})
        handle.add_workers(workers)
        yield handle
    finally:
        # Node by node rather than cluster.shutdown(), which deletes the current-cluster
        # file whoever it names by then.
        for node in [*cluster.worker_nodes, cluster.head_node] if cluster else []:
            if node is not None:
                cluster.remove_node(node)


# ------------------------------------------------------------------ drivers
def start_driver(verb: str, args: list[str], address: str, log: Path) -> subprocess.Popen:
    """`openmed-ray VERB --address ADDRESS ARGS` as its own process group, output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **LOOPBACK_ENV, "RAY_ADDRESS": address}
    if address == "local":
        env.pop("RAY_ADDRESS")
    with log.open("a") as handle:
        handle.write(f"\n$ openmed-ray {verb} --address {address} {' '.join(args)}\n")
        handle.flush()
        return subprocess.Popen(
            [sys.executable, "-m", "openmed_ray.cli", verb, "--address", address, *args],
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_driver(process: subprocess.Popen) -> None:
    """Kill a driver's process group if it still runs (its own local Ray, if any, with it)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def finish(process: subprocess.Popen, timeout: float, log: Path) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_driver(process)
        raise TimeoutError(f"driver still running after {timeout:.0f} s:\n{tail(log)}") from None


def tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, process: subprocess.Popen, log: Path
) -> Any:
    """Poll `condition` until it returns something truthy; fail if the driver ends first."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            raise RuntimeError(f"driver exited ({process.returncode}) before {what}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f} s:\n{tail(log)}")
        time.sleep(0.5)


def run_to_completion(
    verb: str, args: list[str], address: str, log: Path, timeout: float, on_start=None
) -> dict[str, Any]:
    """Run a driver (calling `on_start(process)` while it runs, e.g. to kill a node), and
    if it fails, rerun it once with --resume. Returns exit codes, timings and the kill's
    result."""
    started = time.perf_counter()
    process = start_driver(verb, args, address, log)
    try:
        event = on_start(process) if on_start else None
        first = finish(process, timeout, log)
    finally:
        stop_driver(process)
    record = {
        "first_run_exit_code": first,
        "first_run_seconds": round(time.perf_counter() - started, 1),
        "resume_needed": first != 0,
        "event": event,
    }
    if first != 0:
        resumed_at = time.perf_counter()
        process = start_driver(verb, [*args, "--resume"], address, log)
        try:
            code = finish(process, timeout, log)
        finally:
            stop_driver(process)
        if code != 0:
            raise RuntimeError(f"the --resume run failed too ({code}):\n{tail(log)}")
        record["resume_seconds"] = round(time.perf_counter() - resumed_at, 1)
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


# ------------------------------------------------------------------ annotation
def annotate_args(corpus: Path, out: Path, adapter: str, *extra: str) -> list[str]:
    return ["--input", str(corpus), "--output", str(out), "--adapters", adapter, *extra]


def annotate_clean(args: list[str], log: Path, timeout: float) -> dict[str, Any]:
    """The baseline: the same run on a fresh single-node local Ray, nothing killed."""
    return run_to_completion("annotate", args, "local", log, timeout)


def annotate_losing_a_node(
    cluster: LocalCluster, args: list[str], out: Path, log: Path, timeout: float, min_parts: int
) -> dict[str, Any]:
    """Annotate on the cluster; once `min_parts` document parts are written, kill the worker
    node running an annotation actor."""

    def kill_mid_run(process: subprocess.Popen) -> dict[str, Any]:
        victim = wait_for(
            lambda: (
                len(list_parts(str(out), DOCUMENTS)) >= min_parts
                and cluster.worker_hosting(lambda p: ANNOTATION_ACTOR in " ".join(p.cmdline()))
            ),
            timeout,
            f"{min_parts} document parts with an annotation actor on a worker node",
            process,
            log,
        )
        written = read_parts(str(out), DOCUMENTS).num_rows
        cluster.kill(victim)
        return {"docs_written_before_kill": written}

    # Two actors beside a 1-CPU head: at least one runs on a worker node, and the pool's size
    # outlives the node, as a cluster's planned pool does. The worker nodes' spare CPUs let
    # parts be written while the actors work: with one spare CPU in the cluster, held by the
    # repartition task, the writes waited for the map stage, and a fast machine finished
    # annotating before any part appeared, leaving no mid-run moment to kill a node.
    pool = ["--actors", "2"]
    return run_to_completion(
        "annotate", [*args, *pool], cluster.address, log, timeout, kill_mid_run
    )


def entity_scores(out: Path) -> dict[tuple, float]:
    """(doc_id, start, end, label, adapter, adapter_version) -> score: runs compare equal
    only with the very same adapter weights."""
    table = read_parts(str(out), ENTITIES).to_pydict()
    columns = ("doc_id", "start", "end", "label", "adapter", "adapter_version")
    keys = zip(*(table[c] for c in columns), strict=True)
    return dict(zip(keys, table["score"], strict=True))


def verify_annotations(out: Path, clean: Path, doc_ids: list[str]) -> dict[str, Any]:
    """Exactly-once documents and entities, and the entities of the clean run."""
    ids = read_parts(str(out), DOCUMENTS, columns=["doc_id"]).column("doc_id").to_pylist()
    entities = read_parts(str(out), ENTITIES)
    keys = list(
        zip(
            *(entities.column(c).to_pylist() for c in ("doc_id", "start", "end", "label")),
            strict=True,
        )
    )
    scores, baseline = entity_scores(out), entity_scores(clean)
    same_keys = scores.keys() == baseline.keys()
    score_gap = (
        max((abs(scores[k] - baseline[k]) for k in scores), default=0.0) if same_keys else None
    )
    return {
        "docs_in": len(doc_ids),
        "docs_out": len(ids),
        "duplicates": sum(n - 1 for n in Counter(ids).values()),
        "lost": len(set(doc_ids) - set(ids)),
        "entities": len(keys),
        "duplicate_entities": len(keys) - len(set(keys)),
        "entities_clean_run": len(baseline),
        "entities_equal_to_clean_run": same_keys and score_gap <= SCORE_TOLERANCE,
        "max_score_difference": score_gap,
    }


# ------------------------------------------------------------------ sweep
def trial_results(experiment: Path) -> dict[str, list[dict]]:
    """Trial directory -> every result it recorded, in order (Tune's result.json lines)."""
    trials = {}
    for result in sorted(experiment.glob("*/result.json")):
        lines = result.read_text().splitlines()
        trials[result.parent.name] = [json.loads(line) for line in lines if line.strip()]
    return trials


def finished_trials(experiment: Path, max_epochs: int) -> dict[str, int]:
    """Trials that ran all their epochs -> their number of results."""
    return {
        trial: len(results)
        for trial, results in trial_results(experiment).items()
        if results and results[-1]["training_iteration"] == max_epochs
    }


def trial_mid_run_on_a_worker(cluster: LocalCluster, experiment: Path, max_epochs: int):
    """(worker node, trial) for a trial that has checkpointed an epoch, has epochs to go,
    and whose process (the pid of its last result) runs on a worker node; else None."""
    for trial, results in trial_results(experiment).items():
        if results and results[-1]["training_iteration"] < max_epochs:
            pid = results[-1]["pid"]
            node = cluster.worker_hosting(lambda process, pid=pid: process.pid == pid)
            if node is not None:
                return node, trial
    return None


def sweep_losing_a_node(
    cluster: LocalCluster, args: list[str], output: Path, max_epochs: int, log: Path, timeout: float
) -> dict[str, Any]:
    """Sweep on the cluster; once a trial has finished, kill the worker node running a trial
    mid-way. Reports the finished trials that were rerun (their results changed), the trials
    that ran in more than one process (restarted), and those that repeated an epoch (a
    restart from its checkpoint never does)."""
    experiment = output / "tune" / EXPERIMENT
    before: dict[str, int] = {}
    # No ASHA pruning (its first rung is the last epoch): a trial with epochs to go is then
    # really mid-run, never one the scheduler is about to stop anyway.
    no_pruning = output.parent / f"{output.name}-no-pruning.yaml"
    no_pruning.write_text(f"grace_period: {max_epochs}\n")
    args = [*args, "--config", str(no_pruning)]

    def kill_mid_sweep(process: subprocess.Popen) -> dict[str, Any]:
        victim, trial = wait_for(
            lambda: (
                finished_trials(experiment, max_epochs)
                and trial_mid_run_on_a_worker(cluster, experiment, max_epochs)
            ),
            timeout,
            "a finished trial and another one mid-run on a worker node",
            process,
            log,
        )
        before.update(finished_trials(experiment, max_epochs))
        epochs = len(trial_results(experiment)[trial])
        cluster.kill(victim)
        return {
            "trials_finished_before_kill": len(before),
            "killed_trial": trial,
            "killed_trial_epochs_before_kill": epochs,
        }

    record = run_to_completion("tune", args, cluster.address, log, timeout, kill_mid_sweep)
    after = trial_results(experiment)
    iterations = {t: [r["training_iteration"] for r in results] for t, results in after.items()}
    summary = json.loads((output / "sweep.json").read_text())
    record.update(
        trials=len(summary["trials"]),
        trial_statuses=dict(Counter(t["status"] for t in summary["trials"])),
        sweep_resumed_trials_rerun=sorted(t for t, n in before.items() if len(after[t]) != n),
        trials_restarted=sorted(t for t, rs in after.items() if len({r["pid"] for r in rs}) > 1),
        trials_repeating_an_epoch=sorted(
            t for t, its in iterations.items() if any(b <= a for a, b in pairwise(its))
        ),
        killed_trial_epochs=iterations[record["event"]["killed_trial"]],
        epochs_by_trial={t: len(its) for t, its in iterations.items()},
        final_test_f1=summary["final"]["test"]["f1"],
    )
    return record


# ------------------------------------------------------------------ the benchmark
def write_corpus(docs: list[dict], directory: Path, files: int = 4) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(docs) // files)
    for k in range(files):
        chunk = docs[k * per_file : (k + 1) * per_file]
        pq.write_table(pa.Table.from_pylist(chunk), directory / f"in-{k}.parquet")
    return directory


def chart(payload: dict) -> Callable[[Path], None]:
    def draw(path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        annotate, sweep = payload["annotate"], payload["sweep"]
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        fault = annotate["fault_run"]
        names = ["clean single-node\n(baseline)", "worker node killed"]
        left.bar(
            names, [annotate["clean_run"]["seconds"], fault["first_run_seconds"]], color="grey"
        )
        if fault["resume_needed"]:
            left.bar(names[1:], [fault["resume_seconds"]], bottom=fault["first_run_seconds"])
        left.set_ylabel("wall seconds (+ --resume run, if needed)")
        left.set_title(
            f"annotate {payload['docs_in']} docs: out {payload['docs_out']}, "
            f"dup {payload['duplicates']}, lost {payload['lost']},\n"
            f"entities equal to baseline: {payload['entities_equal_to_clean_run']}",
            fontsize=10,
        )
        killed = sweep["event"]["killed_trial"]
        trials = sorted(sweep["epochs_by_trial"])
        right.bar(
            [t.split("_")[2] for t in trials],
            [sweep["epochs_by_trial"][t] for t in trials],
            color=["tab:orange" if t == killed else "grey" for t in trials],
        )
        right.set_ylabel("epochs recorded per trial")
        right.yaxis.get_major_locator().set_params(integer=True)
        right.set_title(
            f"sweep, {sweep['seconds']:.0f} s: finished trials rerun "
            f"{len(payload['sweep_resumed_trials_rerun'])};\ntrial on the killed node (orange) "
            f"continued from its checkpoint: {payload['sweep_killed_trial_continued_from_checkpoint']}",
            fontsize=10,
        )
        fig.tight_layout()
        fig.savefig(path, dpi=120)

    return draw


def main() -> None:
    from benchmarks.annotate_throughput import load_abstracts
    from openmed_ray.models.catalog import resolve_adapter

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--adapter", default="disease")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--max-train-sentences", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=3600, help="per driver run, seconds")
    parser.add_argument("--json", type=Path, default=RESULTS / "fault_tolerance.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fault-tolerance-"))
    # A copy, so both runs use the same weights even if the catalog's bundle is replaced
    # meanwhile (benchmarks/f1_table.py --ship does that).
    adapter = str(shutil.copytree(resolve_adapter(args.adapter), work / "adapter"))
    docs = load_abstracts(args.docs)
    corpus = write_corpus(docs, work / "corpus")
    # Parts small enough that the kill lands mid-run with work on both sides of it.
    per_part = str(max(10, len(docs) // 20))
    layout = ["--docs-per-batch", per_part, "--rows-per-file", per_part, "--threads-per-actor", "1"]
    clean_out, fault_out = work / "clean", work / "annotated"
    clean = annotate_clean(
        annotate_args(corpus, clean_out, adapter, *layout), work / "clean.log", args.timeout
    )
    sweep_args = [
        "--dataset", "NCBI-disease", "--backbone", "minilm", "--lora", "--lora-targets",
        "all-linear", "--output", str(work / "sweep"), "--trials", str(args.trials),
        "--concurrency", "2", "--max-epochs", str(args.max_epochs), "--max-train-sentences",
        str(args.max_train_sentences), "--seed", "0",
    ]  # fmt: skip
    with local_cluster(workers=2) as cluster:
        fault = annotate_losing_a_node(
            cluster,
            annotate_args(corpus, fault_out, adapter, *layout),
            fault_out,
            work / "annotate.log",
            args.timeout,
            min_parts=3,
        )
        cluster.add_workers(2)  # replace the killed node
        sweep = sweep_losing_a_node(
            cluster, sweep_args, work / "sweep", args.max_epochs, work / "sweep.log", args.timeout
        )
    verified = verify_annotations(fault_out, clean_out, [d["doc_id"] for d in docs])
    killed_trial = sweep["event"]["killed_trial"]
    payload = {
        "cluster": "head (1 CPU) + 2 worker nodes (2 CPUs each) on one machine; a worker node killed",
        "baseline": "clean single-node run (fresh local Ray, nothing killed)",
        **verified,
        "annotate_resume_needed": fault["resume_needed"],
        "annotate_seconds": {"clean_run": clean["seconds"], "with_node_loss": fault["seconds"]},
        "sweep_resumed_trials_rerun": sweep["sweep_resumed_trials_rerun"],
        "sweep_resume_needed": sweep["resume_needed"],
        "sweep_killed_trial_continued_from_checkpoint": killed_trial in sweep["trials_restarted"]
        and killed_trial not in sweep["trials_repeating_an_epoch"],
        "sweep_seconds": sweep["seconds"],
        "annotate": {"clean_run": clean, "fault_run": fault, "adapter": args.adapter},
        "sweep": sweep,
        "settings": vars(args) | {"json": str(args.json), "work_dir": str(work)},
    }
    write_results(payload, args.json, "fault_tolerance", chart(payload))


if __name__ == "__main__":
    main()
