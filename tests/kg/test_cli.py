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
