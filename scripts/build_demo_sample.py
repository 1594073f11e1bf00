"""Build the demo corpus shipped in openmed_ray/resources/demo/ (run once; output is committed).

Takes the first 300 CC0 / CC-BY abstracts (by PMCID) of the PMC-OA trial reports in
../shared/data/corpora/evidence-inference-pmcoa and writes them as Parquet, with a manifest
of PMCID, PMID and licence for attribution.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from openmed_ray.config import resolve_data_root  # noqa: E402

OUT = REPO / "openmed_ray" / "resources" / "demo"
LICENSES = {"CC0", "CC-BY"}
COUNT = 300


def main() -> int:
    source = resolve_data_root() / "corpora" / "evidence-inference-pmcoa"
    with (source / "manifest.tsv").open() as handle:
        manifest = {row["pmcid"]: row for row in csv.DictReader(handle, delimiter="\t")}
    rows = []
    with gzip.open(source / "abstracts.jsonl.gz", "rt") as handle:
        for line in handle:
            record = json.loads(line)
            if record["license"] in LICENSES and record["text"].strip():
                rows.append(record)
    rows = sorted(rows, key=lambda r: int(r["id"].removeprefix("PMC")))[:COUNT]
    OUT.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "doc_id": [r["id"] for r in rows],
            "pmid": [r["pmid"] for r in rows],
            "title": [r["title"] for r in rows],
            "license": [r["license"] for r in rows],
            "text": [r["text"] for r in rows],
        }
    )
    pq.write_table(table, OUT / "pmc_oa_abstracts.parquet", compression="zstd")
    with (OUT / "MANIFEST.tsv").open("w") as handle:
        handle.write("pmcid\tpmid\tlicense\tlicense_url\n")
        for r in rows:
            url = manifest.get(r["id"], {}).get("license_url", "")
            handle.write(f"{r['id']}\t{r['pmid']}\t{r['license']}\t{url}\n")
    (OUT / "README.md").write_text(
        f"# Demo corpus\n\n{len(rows)} abstracts of randomized controlled trial reports from the "
        "PubMed Central Open Access subset, licensed CC0 or CC-BY (see MANIFEST.tsv for each "
        "article's PMCID, PMID, licence and licence URL). Source: the evidence-inference corpus "
        "(jayded/evidence-inference, MIT), texts under each article's own licence. Built by "
        "scripts/build_demo_sample.py.\n"
    )
    print(f"wrote {len(rows)} abstracts to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
