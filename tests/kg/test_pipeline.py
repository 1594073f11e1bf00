"""Incremental, atomic graph runs on local Ray with hand-made partitions."""

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openmed_ray.kg.pipeline import MissingTextError, build_graph
from openmed_ray.kg.store import (
    FAULT_ENV,
    FAULT_POINTS,
    POINTER,
    GraphSettingsError,
    GraphStore,
    InjectedFault,
    PartitionChangedError,
    load_graph,
)
from tests.kg.conftest import make_config, make_inputs, write_partition, write_texts

pytestmark = pytest.mark.slow
STATE_TABLES = ("nodes", "surfaces", "edges", "tiers", "documents")


def snapshot(graph) -> dict:
    """Everything a reader sees: additive state, exports (Parquet, GraphML, Neo4j)."""
    state = GraphStore(graph).current()
    export = state.path / "export"
    result = {name: pq.read_table(state.path / f"{name}.parquet") for name in STATE_TABLES}
    result["export_nodes"], result["export_edges"] = load_graph(graph)
    for name in ("graph.graphml", "neo4j/nodes.csv", "neo4j/edges.csv"):
        result[name] = (export / name).read_text()
    result["totals"] = state.manifest["totals"]
    return result


def assert_same_graph(graph, expected_graph):
    found, expected = snapshot(graph), snapshot(expected_graph)
    for key, value in expected.items():
        if hasattr(value, "equals"):
            assert found[key].equals(value), key
        else:
            assert found[key] == value, key


@pytest.fixture(scope="module")
def built(ray_local, tmp_path_factory):
    """Inputs (day1 + day2) and their graph built in one run, shared by the module."""
    root = tmp_path_factory.mktemp("kg-built")
    entities, texts, dictionary = make_inputs(root)
    graph = root / "fresh"
    summary = build_graph(make_config(entities, texts, dictionary, graph))
    assert summary["partitions"]["new"] == ["day1", "day2"] and summary["documents"] == 6
    return root


@pytest.fixture
def one_run(built):
    """The one-run graph (read only)."""
    return built / "fresh"


@pytest.fixture
def own_copy(built, tmp_path):
    """A private copy of the inputs and the one-run graph, for tests that change them."""
    shutil.copytree(built, tmp_path / "copy")
    root = tmp_path / "copy"
    return root / "ner", root / "texts" / "docs.parquet", root / "dictionary.tsv", root / "fresh"


@pytest.fixture
def day1_only(tmp_path, built):
    """An entities directory holding only day1 (day2 arrives later in the tests)."""
    first = tmp_path / "arriving"
    shutil.copytree(built / "ner" / "day1", first / "day1")
    return first, built / "ner", built / "texts" / "docs.parquet", built / "dictionary.tsv"


def test_merging_partitions_one_by_one_equals_one_run(ray_local, tmp_path, day1_only, one_run):
    arriving, entities, texts, dictionary = day1_only
    graph = tmp_path / "incremental"
    first = build_graph(make_config(arriving, texts, dictionary, graph))
    assert first["partitions"]["new"] == ["day1"] and first["documents"] == 3
    shutil.copytree(entities / "day2", arriving / "day2")
    second = build_graph(make_config(arriving, texts, dictionary, graph))
    assert second["partitions"]["new"] == ["day2"] and second["version"] == 2
    assert_same_graph(graph, one_run)
    # the graph has every tier at work on the hand-made texts
    tiers = second["linking"]["tiers"]
    assert {"exact", "case", "abbreviation", "tfidf", "local"} <= set(tiers)


def test_running_again_changes_nothing(ray_local, own_copy):
    entities, texts, dictionary, graph = own_copy

    def graph_files():  # the graph itself; _claim/ records who ran, and changes every run
        return {p: p.stat().st_mtime_ns for p in graph.rglob("*") if "_claim" not in p.parts}

    before = graph_files()
    summary = build_graph(make_config(entities, texts, dictionary, graph))
    assert summary["up_to_date"] and summary["version"] == 1
    assert graph_files() == before


def test_a_crash_keeps_the_old_graph_and_the_next_run_completes(
    ray_local, tmp_path, monkeypatch, day1_only, one_run
):
    arriving, entities, texts, dictionary = day1_only
    graph = tmp_path / "crashing"
    build_graph(make_config(arriving, texts, dictionary, graph))
    old = snapshot(graph)
    shutil.copytree(entities / "day2", arriving / "day2")
    for point in FAULT_POINTS:
        monkeypatch.setenv(FAULT_ENV, point)
        with pytest.raises(InjectedFault, match=point):
            build_graph(make_config(arriving, texts, dictionary, graph))
        assert (graph / POINTER).read_text().strip() == "states/v000001", point
        now = snapshot(graph)
        assert all(
            now[k].equals(v) if hasattr(v, "equals") else now[k] == v for k, v in old.items()
        )
    assert len(list((graph / "states").iterdir())) > 1  # leftovers of the failed runs
    monkeypatch.delenv(FAULT_ENV)
    summary = build_graph(make_config(arriving, texts, dictionary, graph))
    assert summary["partitions"]["new"] == ["day2"]
    assert_same_graph(graph, one_run)
    # leftovers are gone: the current and the previous state, and only referenced contributions
    assert sorted(p.name for p in (graph / "states").iterdir()) == [
        "v000001",
        summary["state"][-7:],
    ]
    manifest = GraphStore(graph).current().manifest
    referenced = {p["contribution"] for p in manifest["partitions"].values()}
    on_disk = {f"contributions/{p.parent.name}/{p.name}" for p in graph.glob("contributions/*/*")}
    assert on_disk == referenced


def test_a_modified_partition_is_refused_and_replace_equals_a_fresh_build(
    ray_local, tmp_path, own_copy
):
    entities, texts, dictionary, graph = own_copy
    write_partition(entities, "day2", ["d4", "d6"])  # d5 dropped from day2
    with pytest.raises(PartitionChangedError, match="--replace day2"):
        build_graph(make_config(entities, texts, dictionary, graph))
    assert GraphStore(graph).current().version == 1
    summary = build_graph(make_config(entities, texts, dictionary, graph, replace=("day2",)))
    assert summary["partitions"]["replaced"] == ["day2"] and summary["documents"] == 5
    fresh = tmp_path / "fresh-modified"
    build_graph(make_config(entities, texts, dictionary, fresh))
    assert_same_graph(graph, fresh)


def test_documents_are_counted_once_across_partitions(ray_local, tmp_path, kg_inputs):
    entities, texts, dictionary = kg_inputs
    write_partition(entities, "day3", ["d1", "d2"])  # already merged with day1
    summary = build_graph(make_config(entities, texts, dictionary, tmp_path / "graph"))
    assert summary["documents"] == 6 and summary["duplicate_documents_skipped"] == 2
    manifest = GraphStore(tmp_path / "graph").current().manifest
    assert manifest["partitions"]["day3"]["documents"] == 0


def test_missing_texts_fail_before_anything_is_written(ray_local, tmp_path, kg_inputs):
    entities, _, dictionary = kg_inputs
    texts = write_texts(tmp_path / "partial" / "docs.parquet", ["d1", "d2", "d3", "d4", "d5"])
    graph = tmp_path / "graph"
    with pytest.raises(MissingTextError, match="1 document.*no row.*d6"):
        build_graph(make_config(entities, texts, dictionary, graph))
    nulls = tmp_path / "nulls" / "docs.parquet"
    nulls.parent.mkdir()
    table = pq.read_table(write_texts(tmp_path / "all" / "docs.parquet"))
    texts_column = [
        None if d == "d6" else t for d, t in zip(*table.to_pydict().values(), strict=True)
    ]
    pq.write_table(table.set_column(1, "text", pa.array(texts_column, pa.string())), nulls)
    with pytest.raises(MissingTextError, match="1 document.*no usable text.*d6"):
        build_graph(make_config(entities, nulls, dictionary, graph))
    assert GraphStore(graph).current() is None


def test_other_settings_need_a_rebuild(ray_local, tmp_path, own_copy):
    entities, texts, dictionary, graph = own_copy
    changed = {"linker": {"threshold": 0.95}}
    with pytest.raises(GraphSettingsError, match="threshold"):
        build_graph(make_config(entities, texts, dictionary, graph, **changed))
    summary = build_graph(make_config(entities, texts, dictionary, graph, rebuild=True, **changed))
    assert summary["partitions"]["replaced"] == ["day1", "day2"]
    assert summary["settings"]["threshold"] == 0.95
    fresh = tmp_path / "fresh-strict"
    build_graph(make_config(entities, texts, dictionary, fresh, **changed))
    assert_same_graph(graph, fresh)
