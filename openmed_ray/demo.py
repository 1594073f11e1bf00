"""`make demo`: annotate the shipped PMC-OA sample with the default adapters on local Ray.

Prints the run summary and a few example entities. The output lands in runs/demo/ (replaced
on every run) so it can be inspected or rendered afterwards.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent / "resources" / "demo" / "pmc_oa_abstracts.parquet"


def main(output: str = "runs/demo") -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import pyarrow.compute as pc

    from openmed_ray.annotate.pipeline import annotate_corpus, format_summary
    from openmed_ray.config import AnnotateConfig
    from openmed_ray.io.annotations import ENTITIES, read_parts
    from openmed_ray.runtime import ensure_ray

    shutil.rmtree(output, ignore_errors=True)
    ensure_ray(include_dashboard=False, log_to_driver=False)
    summary = annotate_corpus(AnnotateConfig(input=str(SAMPLE), output=output))
    print()
    print(format_summary(summary))
    entities = read_parts(output, ENTITIES)
    print("\nexample entities:")
    # One block per entity source: an adapter, or each head of a multi-type bundle.
    for adapter in sorted(set(entities.column("adapter").to_pylist())):
        rows = entities.filter(pc.equal(entities.column("adapter"), adapter)).slice(0, 6)
        for row in rows.to_pylist():
            print(
                f"  {row['doc_id']:<11} [{row['start']:>4}:{row['end']:<4}] {row['label']:<9} "
                f"{row['score']:.2f}  {row['text']}"
            )
    print(f"\noutput: {output}/entities, {output}/documents, {output}/summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
