"""Corpus annotation on Ray Data: read Parquet, annotate in an actor pool, write part pairs.

    OUT/entities/part-*.parquet    one row per entity (doc_id, start, end, text, label, score,
                                   adapter, adapter_version)
    OUT/documents/part-*.parquet   one row per input document: status 'ok' or 'error' + reason
    OUT/summary.json               counts, seconds, throughput, adapters and versions

Re-running with `resume=True` processes only documents missing from `documents/`.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from openmed_ray.config import AnnotateConfig
from openmed_ray.errors import OpenMedError, root_cause
from openmed_ray.io.annotations import (
    DOCUMENT_SCHEMA,
    DOCUMENTS,
    ENTITIES,
    ENTITY_SCHEMA,
    commit_part,
    completed_doc_ids,
    list_parts,
    part_name,
    read_parts,
    remove_orphans,
)
from openmed_ray.io.claim import Claim, ClaimFence, acquire_claim
from openmed_ray.io.corpus import CorpusInfo, inspect_corpus, read_parquet_dataset
from openmed_ray.io.filesystem import join, ray_remote_env, resolve, write_bytes_atomic
from openmed_ray.models.adapters import identify_adapter
from openmed_ray.models.catalog import DEFAULT_ADAPTERS
from openmed_ray.models.compiled import choose_compile
from openmed_ray.models.inference import StreamsChoice, choose_streams
from openmed_ray.models.precision import cpu_has_bf16_units
from openmed_ray.runtime import ensure_ray

log = logging.getLogger(__name__)


class OutputExistsError(OpenMedError):
    """The output already holds annotations and --resume was not given."""


class RunStoppedError(OpenMedError):
    """The run failed midway (storage down, disk full, a lost claim); committed work stays."""


@dataclass(frozen=True)
class ActorPlan:
    min_actors: int
    max_actors: int
    threads: int
    streams: StreamsChoice  # forward passes in flight per actor, sharing its threads


def plan_actors(config: AnnotateConfig, cluster: dict[str, float], node_cpus: float) -> ActorPlan:
    """Actor counts and torch threads that cannot deadlock.

    Read and write tasks need CPU too: a pool that takes every CPU (2 actors x 1 CPU on a
    2-CPU node) starves them and hangs. So the pool leaves at least one CPU free, and each
    actor runs node_cpus / actors-per-node threads (Ray's OMP_NUM_THREADS follows num_cpus,
    which would leave cores idle), in `streams` concurrent forward passes.
    """
    cpus = cluster.get("CPU", 0)
    gpus = cluster.get("GPU", 0)
    if config.gpus_per_actor > 0 and gpus < config.gpus_per_actor:
        raise OpenMedError(
            f"--gpus-per-actor {config.gpus_per_actor} but the Ray cluster has {gpus:g} GPUs"
        )
    spare = max(config.cpus_per_actor, cpus - 1)
    fit = int(spare // config.cpus_per_actor)
    if config.gpus_per_actor > 0:
        fit = min(fit, int(gpus // config.gpus_per_actor))
    if fit < config.min_actors:
        raise OpenMedError(
            f"{config.min_actors} actor(s) x {config.cpus_per_actor} CPU cannot run beside the read "
            f"and write tasks on a cluster with {cpus:g} CPUs; lower --actors or --cpus-per-actor"
        )
    max_actors = config.max_actors if config.max_actors is not None else max(config.min_actors, fit)
    if max_actors > fit:
        raise OpenMedError(
            f"--actors up to {max_actors} x {config.cpus_per_actor} CPU would leave no CPU for "
            f"reading on a cluster with {cpus:g} CPUs (at most {fit} fit); lower --actors"
        )
    per_node = max(1, min(max_actors, int(node_cpus // config.cpus_per_actor) or 1))
    threads = config.threads_per_actor or max(1, int(node_cpus // per_node))
    streams = choose_streams(
        config.streams, threads=threads, device=config.device, runtime=config.runtime
    )
    return ActorPlan(config.min_actors, max_actors, threads, streams)


def annotate_corpus(config: AnnotateConfig, address: str | None = None) -> dict[str, Any]:
    """Annotate every document of the input; returns (and writes) the summary.

    Adapters and input are checked first; then the run claims the output (one writer per
    output, see openmed_ray/io/claim.py) before it joins Ray (`address`, see `ensure_ray`)
    or writes anything, and releases it when it stops."""
    adapters = list(config.adapters or DEFAULT_ADAPTERS)
    # `auto` is resolved once, here: actors on other nodes must not choose differently.
    cpu_bf16 = cpu_has_bf16_units()
    identities = [
        identify_adapter(adapter, config.precision, config.runtime, config.device, cpu_bf16)
        for adapter in adapters
    ]
    corpus = inspect_corpus(config.input, config.id_column, config.text_column)
    out = config.output.rstrip("/")
    run_id = uuid.uuid4().hex[:8]
    with acquire_claim(
        out, run_id, purpose="annotate", takeover=config.resume, config=config.claim
    ) as claim:
        return _annotate(config, adapters, identities, cpu_bf16, corpus, out, claim, address)


def _annotate(
    config: AnnotateConfig,
    adapters: list[str],
    identities: list,
    cpu_bf16: bool,
    corpus: CorpusInfo,
    out: str,
    claim: Claim,
    address: str | None,
) -> dict[str, Any]:
    import ray
    from ray.data import ActorPoolStrategy

    from openmed_ray.annotate.stage import AnnotateActor, AnnotationSink

    run_id = claim.owner.run_id
    existing = list_parts(out, DOCUMENTS)
    if existing and not config.resume:
        raise OutputExistsError(
            f"{out} already holds annotations ({len(existing)} document parts); pass --resume to "
            "finish an interrupted run, or choose another --output"
        )
    orphans = remove_orphans(out) if config.resume else []
    done = completed_doc_ids(out) if config.resume else pa.array([], pa.string())
    duplicates = corpus.duplicate_ids
    skip = pa.concat_arrays(
        [done.cast(pa.string()), pa.array(sorted(duplicates), pa.string())]
    ).unique()

    ensure_ray(address)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    node_cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=1)
    plan = plan_actors(config, ray.cluster_resources(), node_cpus)
    log.info(
        "annotating %s (%d documents, %d already done, %d duplicate ids) with %s; actors %d-%d x "
        "%s CPU, %d threads in %d streams each; run %s",
        config.input,
        corpus.n_rows,
        len(done),
        len(duplicates),
        adapters,
        plan.min_actors,
        plan.max_actors,
        config.cpus_per_actor,
        plan.threads,
        plan.streams.streams,
        run_id,
    )

    started = time.perf_counter()
    fs, _ = resolve(config.input)
    remote_args = ray_remote_env(config.input, out)
    sink = AnnotationSink(
        out,
        run_id,
        config.rows_per_file,
        claim.fence,
        config.write_attempts,
        config.write_backoff_seconds,
    )
    unique_ids = corpus.n_rows - sum(count - 1 for count in duplicates.values())
    remaining = unique_ids - len(duplicates) - len(done)
    compiled = choose_compile(
        config.compile,
        runtime=config.runtime,
        precisions=[i.precision for i in identities if i.kind != "spacy"],
        docs_per_actor=max(remaining, 0) / plan.max_actors,
        streams=plan.streams.streams,
    )
    log.info("compile: %s (%s)", compiled.compile, compiled.reason)
    if remaining > 0:
        # Streaming repartition into blocks no larger than an output file: parts are written
        # (and a crash loses little) while the run streams, and actors share work evenly,
        # whatever the input files' sizes.
        dataset = read_parquet_dataset(
            corpus.files, fs, [config.id_column, config.text_column], remote_args
        ).repartition(target_num_rows_per_block=min(config.rows_per_file, 2_000))
        annotated = dataset.map_batches(
            AnnotateActor,
            fn_constructor_kwargs={
                "adapters": adapters,
                "id_column": config.id_column,
                "text_column": config.text_column,
                "skip_ids": skip,
                "run_id": run_id,
                "batch_size": config.batch_size,
                "aggregation": config.aggregation,
                "threshold": config.threshold,
                "precision": config.precision,
                "runtime": config.runtime,
                "threads": plan.threads,
                "device": config.device,
                "compile": compiled.compile,
                "cpu_bf16": cpu_bf16,
                "streams": plan.streams.streams,
            },
            compute=ActorPoolStrategy(min_size=plan.min_actors, max_size=plan.max_actors),
            num_cpus=config.cpus_per_actor,
            num_gpus=config.gpus_per_actor or None,
            batch_size=config.docs_per_batch,
            batch_format="pyarrow",
            **remote_args,
        )
        failure = _execute(annotated, sink, remote_args)
        if failure is not None:
            raise RunStoppedError(
                f"annotating {config.input} into {out} stopped: {failure}. Every committed "
                "part is intact and no half-written part is counted; once the cause is fixed, "
                "rerun with --resume to annotate only the missing documents"
            )
    _record_duplicates(out, run_id, duplicates, config, claim.fence)
    seconds = time.perf_counter() - started
    summary = summarize(
        out, config, identities, run_id, seconds, corpus.n_rows, duplicates, orphans
    )
    summary["compile"] = {
        "requested": config.compile,
        "compiled": compiled.compile,
        "reason": compiled.reason,
    }
    summary["streams"] = {
        "requested": "auto" if config.streams is None else config.streams,
        "streams": plan.streams.streams,
        "threads": plan.threads,
        "reason": plan.streams.reason,
    }
    summary["claim"] = claim.describe()
    write_bytes_atomic(json.dumps(summary, indent=2).encode(), join(out, "summary.json"))
    return summary


def _execute(dataset, sink, remote_args: dict) -> str | None:
    """Run the pipeline into the sink; None, or the root cause of its failure.

    The exception is logged, not kept: through its traceback it references the failed
    execution, whose actor pool (and the CPUs it holds) stays alive as long as anything
    does, so a caller that kept the error would starve the next run of CPUs."""
    try:
        dataset.write_datasink(sink, ray_remote_args=remote_args)
        return None
    except Exception as exc:
        # As text: a log record holding exc_info would keep the execution alive too.
        log.error("the annotation pipeline failed:\n%s", "".join(traceback.format_exception(exc)))
        failure = root_cause(exc)
    gc.collect()  # tracebacks are reference cycles: free the failed execution now
    return failure


def _record_duplicates(
    out: str, run_id: str, duplicates: dict[str, int], config: AnnotateConfig, fence: ClaimFence
) -> None:
    """One error row per duplicated id: none of its rows is annotated, and none is lost."""
    recorded = set(completed_doc_ids(out).to_pylist()) if duplicates else set()
    missing = sorted(d for d in duplicates if d not in recorded)
    if not missing:
        return
    documents = pa.table(
        {
            "doc_id": missing,
            "status": ["error"] * len(missing),
            "error": [
                f"duplicate doc_id: {duplicates[d]} input rows share it; none was annotated"
                for d in missing
            ],
            "n_chars": [0] * len(missing),
            "n_wordpieces": [0] * len(missing),
            "n_entities": [0] * len(missing),
            "run_id": [run_id] * len(missing),
        },
        schema=DOCUMENT_SCHEMA,
    )
    commit_part(
        out,
        part_name(run_id, documents.column("doc_id")),
        ENTITY_SCHEMA.empty_table(),
        documents,
        fence,
        config.write_attempts,
        config.write_backoff_seconds,
    )


def summarize(
    out: str,
    config: AnnotateConfig,
    identities: list,
    run_id: str,
    seconds: float,
    n_input: int,
    duplicates: dict[str, int],
    orphans: list[str],
) -> dict[str, Any]:
    documents = read_parts(out, DOCUMENTS)
    this_run = documents.filter(pc.equal(documents.column("run_id"), run_id))
    errors = documents.filter(pc.equal(documents.column("status"), "error"))
    run_docs = this_run.num_rows
    run_pieces = int(pc.sum(this_run.column("n_wordpieces")).as_py() or 0)
    error_reasons: dict[str, int] = {}
    for reason in errors.column("error").to_pylist():
        key = reason.split(":")[0]
        error_reasons[key] = error_reasons.get(key, 0) + 1
    return {
        "input": config.input,
        "output": out,
        "run_id": run_id,
        "adapters": [i.name for i in identities],
        "adapter_versions": [{"adapter": i.name, "version": i.version} for i in identities],
        "precision": {
            "requested": config.precision,
            "runtime": config.runtime,
            "by_adapter": {
                i.name: {"precision": i.precision, "reason": i.precision_reason}
                for i in identities
                if i.kind != "spacy"
            },
        },
        "docs_in": n_input,
        "docs": documents.num_rows,
        "docs_ok": documents.num_rows - errors.num_rows,
        "errors": errors.num_rows,
        "error_reasons": error_reasons,
        "duplicate_ids": len(duplicates),
        "entities": int(pc.sum(documents.column("n_entities")).as_py() or 0),
        "files": {
            "entities": len(list_parts(out, ENTITIES)),
            "documents": len(list_parts(out, DOCUMENTS)),
        },
        "this_run": {
            "docs": run_docs,
            "seconds": round(seconds, 2),
            "docs_per_s": round(run_docs / seconds, 2) if seconds > 0 else math.nan,
            "wordpieces": run_pieces,
            "wordpieces_per_s": round(run_pieces / seconds, 1) if seconds > 0 else math.nan,
            "orphan_parts_removed": len(orphans),
        },
        "seconds": round(seconds, 2),
        "docs_per_s": round(run_docs / seconds, 2) if seconds > 0 else math.nan,
        "wordpieces_per_s": round(run_pieces / seconds, 1) if seconds > 0 else math.nan,
        "settings": {
            k: v for k, v in config.to_dict().items() if k not in ("input", "output", "adapters")
        },
    }


def format_summary(summary: dict[str, Any]) -> str:
    run = summary["this_run"]
    lines = [
        f"annotated {summary['docs']} of {summary['docs_in']} documents into {summary['output']}",
        f"  ok {summary['docs_ok']}, errors {summary['errors']}"
        + (f" ({summary['error_reasons']})" if summary["errors"] else "")
        + f", duplicate ids {summary['duplicate_ids']}",
        f"  entities {summary['entities']} from {', '.join(summary['adapters'])}",
        f"  this run: {run['docs']} documents in {run['seconds']} s = {run['docs_per_s']} docs/s, "
        f"{run['wordpieces_per_s']} wordpieces/s",
        f"  files: {summary['files']['entities']} entities + {summary['files']['documents']} documents parts",
    ]
    return "\n".join(lines)
