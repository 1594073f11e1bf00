"""Corpus annotation through Ray Data on local Ray, local disk and S3 (moto on loopback)."""

import json
import os
import shutil
import signal
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from openmed_ray.annotate.pipeline import OutputExistsError, annotate_corpus, plan_actors
from openmed_ray.config import AnnotateConfig
from openmed_ray.errors import OpenMedError
from openmed_ray.io.annotations import DOCUMENTS, ENTITIES, read_parts
from openmed_ray.io.corpus import InputError
from openmed_ray.models.bundle import update_card
from openmed_ray.models.catalog import UnknownAdapterError
from openmed_ray.models.precision import cpu_has_bf16_units
from tests.annotate.conftest import annotate_config, cli_args, make_texts, run_cli, write_corpus

pytestmark = pytest.mark.slow


config = annotate_config


def entity_rows(output) -> list[tuple]:
    table = read_parts(str(output), ENTITIES)
    rows = zip(
        *(table.column(c).to_pylist() for c in ("doc_id", "start", "end", "label", "adapter")),
        strict=True,
    )
    return sorted(rows)


def engine_rows(adapters, texts: list[str]) -> list[tuple]:
    """What the in-process engine finds in documents d0..d{n-1}, as `entity_rows` lists it."""
    from openmed_ray.annotate.annotator import Annotator

    results = Annotator([str(a) for a in adapters], threads=1).annotate(texts)
    return sorted(
        (f"d{i}", e.start, e.end, e.label, e.adapter)
        for i, r in enumerate(results)
        for e in r.entities
    )


def test_local_end_to_end_with_bad_rows(ray_local, tiny_bundle, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", n=200)
    extra = pa.table(
        {
            "doc_id": ["null", "empty", "bytes", "d3"],  # d3 duplicates an id of the corpus
            "text": [None, "   ", "x", "aspirin"],
        }
    )
    pq.write_table(extra, corpus / "extra.parquet")
    summary = annotate_corpus(config(corpus, tmp_path / "out", tiny_bundle))
    documents = read_parts(str(tmp_path / "out"), DOCUMENTS)
    ids = documents.column("doc_id").to_pylist()
    assert len(ids) == len(set(ids)) == 203  # 200 + 3 new ids, d3 once
    status = dict(zip(ids, documents.column("status").to_pylist(), strict=True))
    errors = dict(zip(ids, documents.column("error").to_pylist(), strict=True))
    assert status["null"] == status["empty"] == status["d3"] == "error"
    assert errors["null"] == "text is null" and errors["empty"] == "text is empty"
    assert errors["d3"].startswith("duplicate doc_id: 2 input rows")
    assert status["bytes"] == "ok"
    assert summary["docs"] == 203 and summary["errors"] == 3 and summary["duplicate_ids"] == 1
    entities = read_parts(str(tmp_path / "out"), ENTITIES)
    assert summary["entities"] == entities.num_rows > 100
    texts = dict(zip([f"d{i}" for i in range(200)], make_texts(200), strict=True))
    texts["bytes"] = "x"  # a one-character document may still get an entity
    for doc_id, start, end, text in zip(
        *(entities.column(c).to_pylist() for c in ("doc_id", "start", "end", "text")), strict=True
    ):
        assert texts[doc_id][start:end] == text
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["docs"] == 203 and on_disk["adapter_versions"][0]["adapter"] == "tiny"
    # Files follow rows_per_file, not one file per tiny batch.
    assert summary["files"]["documents"] <= 5
    with pytest.raises(OutputExistsError, match="--resume"):
        annotate_corpus(config(corpus, tmp_path / "out", tiny_bundle))


def test_bad_input_fails_before_any_work(ray_local, tiny_bundle, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", n=10, files=1)
    with pytest.raises(UnknownAdapterError, match="unknown adapter 'nope'"):
        annotate_corpus(config(corpus, tmp_path / "a", "nope"))
    with pytest.raises(InputError, match="no text column 'body'.*--text-column"):
        annotate_corpus(config(corpus, tmp_path / "b", tiny_bundle, text_column="body"))
    typed = tmp_path / "typed"
    typed.mkdir()
    pq.write_table(pa.table({"doc_id": ["a"], "text": [1]}), typed / "x.parquet")
    with pytest.raises(InputError, match="x.parquet: text column 'text' has type int64"):
        annotate_corpus(config(typed, tmp_path / "c", tiny_bundle))
    empty = tmp_path / "empty"
    empty.mkdir()
    pq.write_table(
        pa.table({"doc_id": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
        empty / "e.parquet",
    )
    with pytest.raises(InputError, match="has no rows"):
        annotate_corpus(config(empty, tmp_path / "d", tiny_bundle))
    with pytest.raises(InputError, match="does not exist"):
        annotate_corpus(config(tmp_path / "missing", tmp_path / "e", tiny_bundle))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_actor_plan_never_starves_reads():
    two_cpus = {"CPU": 2.0}
    plan = plan_actors(AnnotateConfig(input="i", output="o"), two_cpus, node_cpus=2)
    assert (plan.min_actors, plan.max_actors, plan.threads, plan.streams.streams) == (1, 1, 2, 2)
    half = plan_actors(
        AnnotateConfig(input="i", output="o", cpus_per_actor=0.5, min_actors=2, max_actors=2),
        two_cpus,
        node_cpus=2,
    )
    assert (half.max_actors, half.threads, half.streams.streams) == (2, 1, 1)
    with pytest.raises(OpenMedError, match="streams: 3 streams need at least as many torch"):
        plan_actors(AnnotateConfig(input="i", output="o", streams=3), two_cpus, node_cpus=2)
    with pytest.raises(OpenMedError, match="cannot run beside the read and write tasks"):
        plan_actors(AnnotateConfig(input="i", output="o", min_actors=2, max_actors=2), two_cpus, 2)
    with pytest.raises(OpenMedError, match="would leave no CPU for reading"):
        plan_actors(AnnotateConfig(input="i", output="o", min_actors=1, max_actors=3), two_cpus, 2)
    with pytest.raises(OpenMedError, match="GPUs"):
        plan_actors(AnnotateConfig(input="i", output="o", gpus_per_actor=1), two_cpus, 2)


def test_s3_end_to_end(ray_local, tiny_bundle, tmp_path, s3_server):
    import pyarrow.fs as pafs

    from openmed_ray.io.filesystem import resolve

    local = write_corpus(tmp_path / "corpus", n=60, files=2)
    fs, _ = resolve("s3://corpus/in")
    for file in sorted(local.iterdir()):
        pafs.copy_files(str(file), f"corpus/in/{file.name}", destination_filesystem=fs)
    summary = annotate_corpus(config("s3://corpus/in", "s3://corpus/out", tiny_bundle))
    assert summary["docs"] == 60 and summary["errors"] == 0
    documents = read_parts("s3://corpus/out", DOCUMENTS)
    assert sorted(documents.column("doc_id").to_pylist()) == sorted(f"d{i}" for i in range(60))
    assert fs.get_file_info("corpus/out/summary.json").type == pafs.FileType.File
    # The same corpus locally gives the same entities.
    annotate_corpus(config(local, tmp_path / "local-out", tiny_bundle))
    assert entity_rows("s3://corpus/out") == entity_rows(tmp_path / "local-out")


def test_killed_run_resumes_to_exactly_once(tiny_bundle, tmp_path):
    # Enough documents that the kill lands mid-run even on an idle machine.
    docs = 6000
    corpus = write_corpus(tmp_path / "corpus", n=docs, files=4)
    out = tmp_path / "out"
    args = cli_args(corpus, out, tiny_bundle)
    process = run_cli(args)
    documents_dir = out / "documents"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        parts = [p for p in documents_dir.glob("part-*.parquet")] if documents_dir.exists() else []
        if len(parts) >= 2:
            break
        time.sleep(0.5)
    assert process.poll() is None, process.stdout.read()
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = read_parts(str(out), DOCUMENTS).num_rows
    assert 0 < done_before < docs

    # Two --resume runs at once (a retried job beside a manual one): the killed run's claim
    # is taken over by exactly one; the other is refused with the winner's run id.
    racers = [run_cli([*args, "--resume"]), run_cli([*args, "--resume"])]
    outputs = [racer.communicate(timeout=600)[0] for racer in racers]
    codes = [racer.returncode for racer in racers]
    assert sorted(codes) == [0, 2], outputs
    winner = json.loads((out / "summary.json").read_text())
    assert winner["claim"]["generation"] == 2 and winner["claim"]["taken_over_from"]
    loser = outputs[codes.index(2)]
    assert f"annotate run {winner['run_id']}" in loser, loser
    documents = read_parts(str(out), DOCUMENTS)
    ids = documents.column("doc_id").to_pylist()
    assert len(ids) == len(set(ids)) == docs
    resumed_rows = pc.sum(
        pc.equal(documents.column("run_id"), documents.column("run_id")[-1])
    ).as_py()
    assert resumed_rows <= docs - done_before + 100  # only what was missing (plus a lost batch)
    rows = entity_rows(out)
    assert len(rows) == len(set(rows))
    # Exactly what an uninterrupted run finds (Ray runs write the engine's entities).
    assert rows == engine_rows([tiny_bundle], make_texts(docs))


def test_multi_type_bundle_and_single_adapter_in_one_ray_pass(
    ray_local, tiny_multitask_bundle, tiny_bundle, tmp_path
):
    corpus = write_corpus(tmp_path / "corpus", n=60, files=1)
    adapters = (str(tiny_multitask_bundle), str(tiny_bundle))
    # 2 threads per actor: auto runs 2 forward passes at once, one thread each.
    run = config(corpus, tmp_path / "out", tiny_bundle, adapters=adapters, threads_per_actor=2)
    summary = annotate_corpus(run)
    assert summary["streams"] == {
        "requested": "auto",
        "streams": 2,
        "threads": 2,
        "reason": "auto: 2 streams sharing 2 threads",
    }
    rows = entity_rows(tmp_path / "out")
    assert {r[4] for r in rows} == {"tiny-multi:chemical", "tiny-multi:disease", "tiny"}
    # The Ray run writes exactly what the in-process engine finds on one stream.
    assert rows == engine_rows(adapters, make_texts(60))
    versions = {v["adapter"]: v["version"] for v in summary["adapter_versions"]}
    assert set(versions) == {"tiny-multi", "tiny"}
    # auto (the default) with no int8 measurement in the cards: FP32, and the summary says why.
    assert summary["precision"]["requested"] == "auto"
    for choice in summary["precision"]["by_adapter"].values():
        assert (
            choice["precision"] == "fp32" and "no int8 or bf16 F1 measurement" in choice["reason"]
        )
    # auto compile: actors running 2 streams stay eager (faster than compiled there).
    assert summary["compile"]["requested"] == "auto" and not summary["compile"]["compiled"]
    assert (
        summary["compile"]["reason"] == "auto: 2 streams per actor run faster eager than compiled"
    )


def test_auto_precision_is_resolved_by_the_driver_and_the_actors_follow(
    ray_local, tiny_bundle, tmp_path
):
    from openmed_ray.annotate.annotator import Annotator

    bundle = tmp_path / "measured"
    shutil.copytree(tiny_bundle, bundle)
    measured = {"fp32_f1": 0.9, "int8_f1": 0.9, "int8_delta_pp": 0.0}
    measured |= {"bf16_f1": 0.9, "bf16_delta_pp": 0.0}
    update_card(bundle, precision_check={"split": "test", "heads": {"tiny": measured}})
    corpus = write_corpus(tmp_path / "corpus", n=40, files=1)
    summary = annotate_corpus(config(corpus, tmp_path / "out", bundle))
    expected = "bf16" if cpu_has_bf16_units() else "int8"
    (choice,) = summary["precision"]["by_adapter"].values()
    assert choice["precision"] == expected
    (version,) = summary["adapter_versions"]
    assert version["version"].endswith(f"-{expected}")
    entities = read_parts(str(tmp_path / "out"), ENTITIES)
    assert entities.num_rows and set(entities.column("adapter_version").to_pylist()) == {
        version["version"]
    }
    # What the actors were told wins over their own CPU: the other answer gives the other choice.
    other = Annotator([str(bundle)], precision="auto", cpu_bf16=not cpu_has_bf16_units())
    (predictor,) = other.backends[0].predictors
    assert predictor.precision == ("int8" if expected == "bf16" else "bf16")
