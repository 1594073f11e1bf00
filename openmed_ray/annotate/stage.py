"""The Ray Data stages of corpus annotation: the actor that annotates batches and the sink
that writes entity/document part pairs. Both are internal to `pipeline.py`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

from openmed_ray.io.annotations import ANNOTATED_SCHEMA, commit_part, part_name, split_annotated
from openmed_ray.io.claim import ClaimFence


class AnnotateActor:
    """Callable class for `map_batches`: set up once (backbone + adapters), then batches."""

    def __init__(
        self,
        *,
        adapters: list[str],
        id_column: str,
        text_column: str,
        skip_ids: pa.Array,
        run_id: str,
        batch_size: int,
        aggregation: str,
        threshold: float,
        precision: str,
        runtime: str,
        threads: int,
        device: str,
        compile: bool,
        cpu_bf16: bool,
        streams: int,
    ) -> None:
        from openmed_ray.annotate.annotator import Annotator

        self.annotator = Annotator(
            adapters,
            batch_size=batch_size,
            aggregation=aggregation,
            threshold=threshold,
            precision=precision,
            runtime=runtime,
            threads=threads,
            device=device,
            compile=compile,
            cpu_bf16=cpu_bf16,
            streams=streams,
        )
        self.id_column = id_column
        self.text_column = text_column
        self.skip_ids = skip_ids
        self.run_id = run_id

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = pc.cast(batch.column(self.id_column), pa.string())
        if len(self.skip_ids):
            keep = pc.invert(pc.is_in(ids, value_set=self.skip_ids))
            batch, ids = batch.filter(keep), ids.filter(keep)
        texts = batch.column(self.text_column).to_pylist()
        results = self.annotator.annotate(texts)
        return pa.table(
            {
                "doc_id": ids,
                "status": [r.status for r in results],
                "error": [r.error for r in results],
                "n_chars": [r.n_chars for r in results],
                "n_wordpieces": [r.n_wordpieces for r in results],
                "n_entities": [len(r.entities) for r in results],
                "run_id": [self.run_id] * len(results),
                "entities": [[e.__dict__ for e in r.entities] for r in results],
            },
            schema=ANNOTATED_SCHEMA,
        )


class AnnotationSink(Datasink[dict]):
    """Writes each write task's rows as one entities/documents part pair."""

    def __init__(
        self,
        root: str,
        run_id: str,
        rows_per_file: int,
        fence: ClaimFence,
        write_attempts: int,
        write_backoff_seconds: float,
    ) -> None:
        self.root = root
        self.run_id = run_id
        self.rows_per_file = rows_per_file
        self.fence = fence
        self.write_attempts = write_attempts
        self.write_backoff_seconds = write_backoff_seconds
        self.totals: dict[str, int] = {}

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks: Iterable[Block], ctx: Any) -> dict:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return {"documents": 0, "entities": 0, "files": 0}
        entities, documents = split_annotated(pa.concat_tables(tables, promote_options="default"))
        name = part_name(self.run_id, documents.column("doc_id"))
        commit_part(
            self.root,
            name,
            entities,
            documents,
            self.fence,
            self.write_attempts,
            self.write_backoff_seconds,
        )
        return {"documents": documents.num_rows, "entities": entities.num_rows, "files": 1}

    def on_write_complete(self, write_result) -> None:
        totals = {"documents": 0, "entities": 0, "files": 0}
        for result in write_result.write_returns:
            for key in totals:
                totals[key] += result[key]
        self.totals = totals

    def get_name(self) -> str:
        return "OpenMedAnnotations"
