"""The annotation machinery at scale: 1,000,000 short synthetic documents, tiny 2-layer model.

    python benchmarks/annotate_scale.py --docs 1000000 --json benchmarks/results/annotate_scale.json

The model is deliberately tiny (2 layers, hidden 64, MiniLM's tokenizer) so the run measures
the pipeline, not the model. The run is killed part-way (`--kill-at`, fraction of documents
written) and resumed with `--resume`, so resume is exercised at full size. Baseline: the
same model on the first 20k documents in-process (no Ray), the ceiling for one process.
Reported:
  - docs/s over the whole job (both runs) and for the resumed run;
  - peak resident memory of the driver and of the Ray workers, sampled every second, with
    the peak over the first and the last third of the run to show it stays flat;
  - output files; and whether every document ends up exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from benchmarks.common import RESULTS, write_results  # noqa: E402

WORDS = [
    "the",
    "patient",
    "was",
    "given",
    "aspirin",
    "for",
    "severe",
    "asthma",
    "and",
    "fever",
    "after",
    "surgery",
    "with",
    "cisplatin",
    "heparin",
    "warfarin",
    "lithium",
    "migraine",
    "anemia",
    "sepsis",
    "gout",
    "of",
    "a",
    "in",
    "to",
    "dose",
    "daily",
    "mg",
    "tablets",
    "trial",
    "randomized",
    "placebo",
    "group",
    "outcome",
    "improved",
    "treatment",
    "reduced",
    "risk",
    "blood",
    "pressure",
]


def build_tiny_bundle(directory: Path) -> Path:
    import shutil

    from transformers import BertConfig, BertModel

    from openmed_ray.models.backbones import resolve_backbone
    from openmed_ray.models.bundle import save_bundle
    from openmed_ray.models.classifier import build_classifier

    backbone = directory / "tiny-backbone"
    minilm = resolve_backbone("minilm")
    backbone.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm / name, backbone / name)
    config = BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
    )
    BertModel(config).save_pretrained(str(backbone))
    labels = ["O", "B-Entity", "I-Entity"]
    model = build_classifier(backbone, len(labels), None)
    save_bundle(
        model,
        labels,
        {"name": "tiny-scale", "dataset": "synthetic"},
        directory / "bundle",
        backbone_spec=str(backbone),
    )
    return directory / "bundle"


def write_corpus(directory: Path, n_docs: int, files: int = 20, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    per_file = -(-n_docs // files)
    vocabulary = np.array(WORDS)
    for k in range(files):
        begin, end = k * per_file, min(n_docs, (k + 1) * per_file)
        lengths = rng.integers(8, 30, size=end - begin)
        words = vocabulary[rng.integers(0, len(vocabulary), size=int(lengths.sum()))]
        cuts = np.cumsum(lengths)[:-1]
        texts = [" ".join(chunk) + "." for chunk in np.split(words, cuts)]
        ids = [f"doc{i:08d}" for i in range(begin, end)]
        pq.write_table(
            pa.table({"doc_id": ids, "text": texts}), directory / f"part-{k:03d}.parquet"
        )


class MemorySampler(threading.Thread):
    """Samples RSS of the driver process tree and of all Ray worker processes every second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float, float]] = []  # (t, driver MB, max worker MB)
        self.root_pid: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            driver, worker = 0.0, 0.0
            for process in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                try:
                    cmd = " ".join(process.info["cmdline"] or [])
                    rss = process.info["memory_info"].rss / 2**20
                except (psutil.NoSuchProcess, TypeError):
                    continue
                if process.info["pid"] == self.root_pid:
                    driver = rss
                elif cmd.startswith("ray::") and "MapWorker" in cmd:
                    worker = max(worker, rss)
            self.samples.append((time.time(), driver, worker))
            time.sleep(1.0)


def count_documents(out: Path) -> int:
    import pyarrow.parquet as pq

    total = 0
    for part in (out / "documents").glob("part-*.parquet"):
        try:
            total += pq.ParquetFile(part).metadata.num_rows
        except Exception:  # a file being renamed into place
            continue
    return total


def run_annotate(
    args: list[str], sampler: MemorySampler, kill_at: int | None, out: Path
) -> tuple[int, float]:
    env = {**os.environ}
    started = time.time()
    process = subprocess.Popen(
        [sys.executable, "-m", "openmed_ray.cli", "annotate", *args],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sampler.root_pid = process.pid
    while process.poll() is None:
        if kill_at is not None and count_documents(out) >= kill_at:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            break
        time.sleep(2)
    return process.returncode, time.time() - started


def in_process_baseline(bundle: Path, corpus: Path, n_docs: int) -> dict:
    """Baseline: the same model and documents through the in-process Annotator, no Ray."""
    import pyarrow.parquet as pq

    from openmed_ray.annotate.annotator import Annotator

    texts = pq.read_table(sorted(corpus.glob("*.parquet"))[0], columns=["text"])
    texts = texts.column("text").to_pylist()[:n_docs]
    annotator = Annotator([str(bundle)], batch_size=256, threads=2)
    started = time.perf_counter()
    for begin in range(0, len(texts), 1024):
        annotator.annotate(texts[begin : begin + 1024])
    seconds = time.perf_counter() - started
    return {
        "docs": len(texts),
        "seconds": round(seconds, 1),
        "docs_per_s": round(len(texts) / seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--kill-at", type=float, default=0.4)
    parser.add_argument("--rows-per-file", type=int, default=50_000)
    parser.add_argument("--baseline-docs", type=int, default=20_000)
    parser.add_argument("--json", type=Path, default=RESULTS / "annotate_scale.json")
    args = parser.parse_args(argv)

    import pyarrow.compute as pc

    from openmed_ray.io.annotations import DOCUMENTS, ENTITIES, list_parts, read_parts

    workdir = Path(tempfile.mkdtemp(prefix="scale-"))
    bundle = build_tiny_bundle(workdir)
    corpus = workdir / "corpus"
    write_corpus(corpus, args.docs)
    baseline = in_process_baseline(bundle, corpus, args.baseline_docs)
    out = workdir / "out"
    cli_args = [
        "--input",
        str(corpus),
        "--output",
        str(out),
        "--adapters",
        str(bundle),
        "--rows-per-file",
        str(args.rows_per_file),
        "--docs-per-batch",
        "1024",
        "--batch-size",
        "256",
    ]
    sampler = MemorySampler()
    sampler.start()
    code_killed, seconds_killed = run_annotate(
        cli_args, sampler, int(args.kill_at * args.docs), out
    )
    done_at_kill = count_documents(out)
    code, seconds_resumed = run_annotate([*cli_args, "--resume"], sampler, None, out)
    sampler.stop.set()
    documents = read_parts(str(out), DOCUMENTS, columns=["doc_id", "status"])
    ids = documents.column("doc_id")
    unique = len(pc.unique(ids))
    summary = json.loads((out / "summary.json").read_text())
    times = [t for t, _, _ in sampler.samples]
    span = times[-1] - times[0] if times else 0
    first = [s for s in sampler.samples if s[0] <= times[0] + span / 3]
    last = [s for s in sampler.samples if s[0] >= times[0] + 2 * span / 3]
    payload = {
        "docs": args.docs,
        "model": "BERT 2 layers, hidden 64 (random weights), MiniLM tokenizer",
        "docs_out": len(ids),
        "unique_docs_out": unique,
        "every_document_exactly_once": len(ids) == unique == args.docs,
        "entities": summary["entities"],
        "files": {
            "entities": len(list_parts(str(out), ENTITIES)),
            "documents": len(list_parts(str(out), DOCUMENTS)),
        },
        "killed_run": {
            "exit_code": code_killed,
            "seconds": round(seconds_killed, 1),
            "docs_done_at_kill": done_at_kill,
        },
        "resumed_run": {
            "exit_code": code,
            "seconds": round(seconds_resumed, 1),
            "docs": summary["this_run"]["docs"],
            "docs_per_s": summary["this_run"]["docs_per_s"],
        },
        "resume_works": code == 0 and len(ids) == unique == args.docs,
        "docs_per_s_overall": round(args.docs / (seconds_killed + seconds_resumed), 1),
        "baseline_in_process": baseline,
        "peak_rss_mb": {
            "driver": round(max((d for _, d, _ in sampler.samples), default=0), 1),
            "worker": round(max((w for _, _, w in sampler.samples), default=0), 1),
            "driver_first_third": round(max((d for _, d, _ in first), default=0), 1),
            "driver_last_third": round(max((d for _, d, _ in last), default=0), 1),
            "worker_first_third": round(max((w for _, _, w in first), default=0), 1),
            "worker_last_third": round(max((w for _, _, w in last), default=0), 1),
        },
    }
    write_results(payload, args.json, "annotate_scale", lambda path: chart(sampler.samples, path))
    return 0


def chart(samples, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not samples:
        return
    t0 = samples[0][0]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([t - t0 for t, _, _ in samples], [d for _, d, _ in samples], label="driver RSS")
    ax.plot(
        [t - t0 for t, _, _ in samples], [w for _, _, w in samples], label="annotation actor RSS"
    )
    ax.set_xlabel("seconds")
    ax.set_ylabel("MB")
    ax.set_title("Resident memory while annotating 1M documents (killed, then resumed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
