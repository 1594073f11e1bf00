"""`openmed-ray kg` end to end on local Ray, and its errors."""

import json

import pyarrow.parquet as pq
import pytest

from openmed_ray.cli import main
from openmed_ray.kg.store import GraphStore

pytestmark = pytest.mark.slow


def kg_args(entities, texts, dictionary, graph, *extra):
    return [
        "kg",
        "--entities", str(entities),
        "--documents", str(texts),
        "--graph", str(graph),
        "--no-builtin-dictionary",
        "--dictionary", str(dictionary),
        "--threshold", "0.6",
        "--docs-per-batch", "2",
        *extra,
    ]  # fmt: skip


def test_kg_verb_builds_then_reports_up_to_date(ray_local, tmp_path, kg_inputs, capsys):
    entities, texts, dictionary = kg_inputs
    graph = tmp_path / "graph"
    args = kg_args(
        entities,
        texts,
        dictionary,
        graph,
        "--level",
        "sentence",
        "--type-pairs",
        "Chemical-Disease",
    )
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["documents"] == 6 and summary["partitions"]["new"] == ["day1", "day2"]
    assert list(summary["edges"]) == ["sentence"]
    state = GraphStore(graph).current()
    nodes = pq.read_table(state.path / "export" / "nodes.parquet").to_pylist()
    labels = {row["node_id"]: row["label"] for row in nodes}
    edges = pq.read_table(state.path / "export" / "edges.parquet").to_pylist()
    assert edges and all(
        {labels[e["src"]], labels[e["dst"]]} == {"Chemical", "Disease"} for e in edges
    )
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out


def test_kg_verb_names_the_bad_dictionary_line(ray_local, tmp_path, kg_inputs, capsys):
    entities, texts, _ = kg_inputs
    bad = tmp_path / "extra.tsv"
    bad.write_text("aspirin\tD001241\tChemical\naspirin D001241 Chemical\n")
    assert main(kg_args(entities, texts, bad, tmp_path / "graph")) == 2
    assert f"{bad}:2: expected 3 non-empty" in capsys.readouterr().err
    assert not (tmp_path / "graph").exists()


def test_two_concurrent_kg_runs_on_one_graph_merge_each_partition_once(tmp_path, kg_inputs):
    import os
    import subprocess
    import sys

    entities, texts, dictionary = kg_inputs
    graph = tmp_path / "graph"
    command = [
        sys.executable,
        "-m",
        "openmed_ray.cli",
        *kg_args(entities, texts, dictionary, graph, "--address", "local", "--json"),
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    runs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [run.communicate(timeout=600) for run in runs]
    codes = [run.returncode for run in runs]
    assert sorted(codes) == [0, 2], results
    winner = json.loads(results[codes.index(0)][0])
    refused = results[codes.index(2)][1]
    assert f"kg run {winner['run']}" in refused, refused
    state = GraphStore(graph).current()
    assert state.version == 1 and sorted(state.manifest["partitions"]) == ["day1", "day2"]
    assert [h["run"] for h in state.manifest["history"]] == [winner["run"]]
    assert winner["documents"] == 6


def test_kg_refuses_a_graph_owned_by_a_live_run_and_takes_over_a_dead_one(
    ray_local, tmp_path, kg_inputs, capsys
):
    from openmed_ray.config import ClaimConfig
    from openmed_ray.io.claim import acquire_claim
    from tests.conftest import claim_by_dead_process

    entities, texts, dictionary = kg_inputs
    graph = tmp_path / "graph"
    held = acquire_claim(str(graph), "nightly1", purpose="kg", takeover=False, config=ClaimConfig())
    assert main(kg_args(entities, texts, dictionary, graph)) == 2
    assert "owned by kg run nightly1" in capsys.readouterr().err
    assert GraphStore(graph).current() is None
    held.release()
    # A nightly run killed while it held the graph: the next run takes over by itself (a
    # kg run redoes a dead run's merge; nothing of it was committed).
    claim_by_dead_process(str(graph), "nightly2", purpose="kg")
    assert main([*kg_args(entities, texts, dictionary, graph), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["documents"] == 6 and GraphStore(graph).current().version == 1
