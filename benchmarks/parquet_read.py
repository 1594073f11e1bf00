"""Reading a corpus into Ray Data: Ray's default Parquet reader against ours.

    python benchmarks/parquet_read.py --docs 6000 --files 4 64 --repeats 3

Baseline: `ray.data.read_parquet` as Ray 2.60 runs it by default (DataSourceV2: a ListFiles
stage and a pool of footer-reading actors per read). Ours: `read_parquet_dataset`, which the
annotation, KG and DAPT pipelines use (Ray Data's V1 reader; the driver has listed the files
and read their footers already). Each read is planned and executed the way `annotate` does it
(the two columns, then a streaming repartition into blocks of 100 rows), on one local Ray of
2 CPUs started once; the readers alternate so neither always runs on a warmer cluster. The
first read of each reader is reported apart from the median of the rest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from benchmarks.common import RESULTS, write_results  # noqa: E402

COLUMNS = ["doc_id", "text"]
READERS = ("ray default (V2, baseline)", "read_parquet_dataset (V1)")


def write_corpus(directory: Path, docs: int, files: int) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    text = "the patient was given aspirin for severe asthma after surgery . " * 4
    per_file = -(-docs // files)
    paths = []
    for k in range(files):
        ids = [f"d{i}" for i in range(k * per_file, min(docs, (k + 1) * per_file))]
        path = directory / f"in-{k:03d}.parquet"
        pq.write_table(pa.table({"doc_id": ids, "text": [text] * len(ids)}), path)
        paths.append(str(path))
    return paths


def read_rows(make_dataset: Callable, paths: list[str]) -> tuple[int, float]:
    """Rows read and seconds taken, planning included (V1 samples the files when planned)."""
    started = time.perf_counter()
    dataset = make_dataset(paths).repartition(target_num_rows_per_block=100)
    rows = sum(b.num_rows for b in dataset.iter_batches(batch_format="pyarrow", batch_size=None))
    return rows, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=6000)
    parser.add_argument("--files", type=int, nargs="+", default=[4, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=RESULTS / "parquet_read.json")
    args = parser.parse_args()

    import pyarrow.fs as pafs
    import ray
    import ray.data

    from openmed_ray.io.corpus import read_parquet_dataset
    from openmed_ray.runtime import ensure_ray

    ensure_ray("local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    fs = pafs.LocalFileSystem()
    readers = {
        READERS[0]: lambda paths: ray.data.read_parquet(paths).select_columns(COLUMNS),
        READERS[1]: lambda paths: read_parquet_dataset(paths, fs, COLUMNS),
    }
    runs, speedups = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        for files in args.files:
            paths = write_corpus(Path(scratch) / f"files-{files}", args.docs, files)
            seconds: dict[str, list[float]] = {name: [] for name in readers}
            for _ in range(args.repeats):
                for name, make in readers.items():
                    rows, took = read_rows(make, paths)
                    if rows != args.docs:
                        raise SystemExit(f"{name} read {rows} rows of {args.docs}")
                    seconds[name].append(round(took, 2))
            medians = {
                name: round(statistics.median(times[1:] or times), 2)
                for name, times in seconds.items()
            }
            for name, times in seconds.items():
                runs.append(
                    {
                        "reader": name,
                        "files": files,
                        "docs": args.docs,
                        "seconds": times,
                        "first_seconds": times[0],
                        "median_later_seconds": medians[name],
                    }
                )
            speedups[str(files)] = round(medians[READERS[0]] / medians[READERS[1]], 2)
    ray.shutdown()
    payload = {
        "ray": ray.__version__,
        "cpus": os.cpu_count(),
        "baseline": READERS[0],
        "runs": runs,
        "speedup_vs_baseline": speedups,
    }
    write_results(payload, args.json, "parquet_read", chart(payload, args.files))


def chart(payload: dict, file_counts: list[int]) -> Callable[[Path], None]:
    def draw(path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.38
        for offset, reader in enumerate(READERS):
            rows = [r for r in payload["runs"] if r["reader"] == reader]
            xs = [i + (offset - 0.5) * width for i in range(len(file_counts))]
            ax.bar(xs, [r["first_seconds"] for r in rows], width, alpha=0.35, color=f"C{offset}")
            ax.bar(xs, [r["median_later_seconds"] for r in rows], width, color=f"C{offset}",
                   label=f"{reader}: median later read (pale: first read)")  # fmt: skip
        ax.set_xticks(range(len(file_counts)), [f"{n} files" for n in file_counts])
        ax.set_ylabel("seconds to read and repartition")
        docs = payload["runs"][0]["docs"]
        ax.set_title(f"{docs} documents into Ray Data, {payload['cpus']} CPUs", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)

    return draw


if __name__ == "__main__":
    main()
