"""`kg --relations`: every candidate pair scored on Ray Data, edges with score and evidence,
exact incremental merges and replacements, the export threshold, clear errors."""

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openmed_ray.errors import ConfigError, OpenMedError
from openmed_ray.kg.pipeline import build_graph
from openmed_ray.kg.relations import (
    GOLD_MENTION_THRESHOLD,
    PIPELINE_THRESHOLD,
    RelationBundleError,
    relation_spec,
)
from openmed_ray.kg.store import GraphSettingsError, GraphStore, load_graph
from openmed_ray.models.bundle import read_card, update_card
from tests.kg.conftest import MENTIONS, TEXTS, make_config, make_inputs, write_partition

pytestmark = pytest.mark.slow


def relation_config(inputs, graph, bundle, **changes):
    entities, texts, dictionary = inputs
    return make_config(entities, texts, dictionary, graph, relations=str(bundle), **changes)


def state_relations(graph):
    state = GraphStore(graph).current()
    return pq.read_table(state.path / "relations.parquet")


@pytest.fixture(scope="module")
def related(ray_local, tiny_relation_bundle, tmp_path_factory):
    """Inputs and a graph built with the tiny relation bundle, exporting every score."""
    root = tmp_path_factory.mktemp("kg-relations")
    inputs = make_inputs(root)
    graph = root / "graph"
    summary = build_graph(
        relation_config(inputs, graph, tiny_relation_bundle, min_relation_score=0.0)
    )
    return root, inputs, graph, summary


def test_every_candidate_pair_is_scored_and_edges_carry_the_best_document(related):
    root, _, graph, summary = related
    nodes, edges = load_graph(graph)
    state = GraphStore(graph).current()
    surfaces = pq.read_table(state.path / "surfaces.parquet").to_pylist()
    node_of = {row["surface"]: row["node_id"] for row in surfaces}
    expected = {
        (doc_id, node_of[c], node_of[d])
        for doc_id, mentions in MENTIONS.items()
        for c, c_label in mentions
        if c_label == "Chemical"
        for d, d_label in mentions
        if d_label == "Disease"
    }
    rows = state_relations(graph).to_pylist()
    assert {(r["doc_id"], r["head"], r["tail"]) for r in rows} == expected
    assert len(rows) == len(expected) and all(r["relation"] == "CID" for r in rows)
    assert summary["relations"]["scored_pairs"] == len(expected)
    assert summary["relations"]["documents_with_pairs"] == len({d for d, _, _ in expected})

    label = dict(zip(*nodes.select(["node_id", "label"]).to_pydict().values(), strict=True))
    scored_edges = [
        e
        for e in edges.to_pylist()
        if {label[e["src"]], label[e["dst"]]} == {"Chemical", "Disease"}
    ]
    assert scored_edges and all(e["score"] is not None for e in scored_edges)
    for edge in scored_edges:
        pair = {edge["src"], edge["dst"]}
        mine = [r for r in rows if {r["head"], r["tail"]} == pair]
        best = max(mine, key=lambda r: (r["score"], [-ord(c) for c in r["doc_id"]]))
        assert edge["score"] == best["score"] and edge["evidence_doc_id"] == best["doc_id"]
        assert edge["relation_doc_count"] == len(mine)  # min score 0: every document counts
        evidence = TEXTS[best["doc_id"]][edge["evidence_start"] : edge["evidence_end"]]
        surfaces_of = {s["node_id"]: [] for s in surfaces}
        for s in surfaces:
            surfaces_of[s["node_id"]].append(s["surface"])
        for node in pair:
            assert any(surface in evidence for surface in surfaces_of[node]), (evidence, node)
    other = [e for e in edges.to_pylist() if e not in scored_edges]
    assert other and all(e["score"] is None and e["relation"] is None for e in other)
    export = state.path / "export"
    assert pq.read_table(export / "relations.parquet").num_rows == len(expected)
    header = (export / "neo4j" / "edges.csv").read_text().splitlines()[0]
    assert "relation" in header and "score:float" in header and "evidence_doc_id" in header
    assert 'attr.name="evidence_start"' in (export / "graph.graphml").read_text()


def test_the_export_threshold_filters_scored_pairs_only(related, tiny_relation_bundle, tmp_path):
    root, inputs, graph, _ = related
    copy = tmp_path / "graph"
    shutil.copytree(graph, copy)
    rows = state_relations(copy).to_pylist()
    cut = sorted(r["score"] for r in rows)[len(rows) // 2]
    summary = build_graph(
        relation_config(inputs, copy, tiny_relation_bundle, min_relation_score=cut)
    )
    assert not summary["up_to_date"] and summary["partitions"]["new"] == []
    assert summary["relations"]["pairs_at_or_above_min_score"] == sum(
        r["score"] >= cut for r in rows
    )
    nodes, edges = load_graph(copy)
    exported = pq.read_table(GraphStore(copy).current().path / "export" / "relations.parquet")
    assert exported.num_rows == sum(r["score"] >= cut for r in rows)
    label = dict(zip(*nodes.select(["node_id", "label"]).to_pydict().values(), strict=True))
    for edge in edges.to_pylist():
        if {label[edge["src"]], label[edge["dst"]]} == {"Chemical", "Disease"}:
            assert edge["score"] >= cut and edge["relation"] == "CID"
    _, all_edges = load_graph(graph)
    assert edges.num_rows < all_edges.num_rows
    # The state keeps every scored pair whatever the export threshold.
    assert state_relations(copy).equals(state_relations(graph))


def test_the_default_threshold_is_calibrated_through_the_pipeline_where_the_card_has_one(
    related, tiny_relation_bundle, tmp_path
):
    _, inputs, _, _ = related
    spec = relation_spec(str(tiny_relation_bundle))
    assert spec.threshold == read_card(tiny_relation_bundle)["threshold"]
    assert spec.threshold_source == GOLD_MENTION_THRESHOLD
    calibrated_bundle = tmp_path / "bundle"
    shutil.copytree(tiny_relation_bundle, calibrated_bundle)
    update_card(calibrated_bundle, pipeline_threshold={"threshold": 0.123})
    calibrated = relation_spec(str(calibrated_bundle))
    assert (calibrated.threshold, calibrated.threshold_source) == (0.123, PIPELINE_THRESHOLD)
    assert calibrated.version == spec.version  # a card field, not the weights
    summary = build_graph(relation_config(inputs, tmp_path / "graph", calibrated_bundle))
    assert summary["relations"]["min_score"] == 0.123
    assert summary["relations"]["bundle_threshold"]["chosen_on"] == PIPELINE_THRESHOLD


def test_incremental_merges_and_replacements_equal_a_fresh_build(
    ray_local, related, tiny_relation_bundle, tmp_path
):
    root, (entities, texts, dictionary), graph, _ = related
    arriving = tmp_path / "arriving"
    shutil.copytree(entities / "day1", arriving / "day1")
    incremental = tmp_path / "incremental"
    config = dict(relations=str(tiny_relation_bundle), min_relation_score=0.0)
    build_graph(make_config(arriving, texts, dictionary, incremental, **config))
    shutil.copytree(entities / "day2", arriving / "day2")
    build_graph(make_config(arriving, texts, dictionary, incremental, **config))
    assert state_relations(incremental).equals(state_relations(graph))
    assert load_graph(incremental)[1].equals(load_graph(graph)[1])

    write_partition(arriving, "day2", ["d4", "d6"])  # d5 leaves
    build_graph(make_config(arriving, texts, dictionary, incremental, replace=("day2",), **config))
    fresh = tmp_path / "fresh"
    build_graph(make_config(arriving, texts, dictionary, fresh, **config))
    assert state_relations(incremental).equals(state_relations(fresh))
    assert "d5" not in state_relations(incremental).column("doc_id").to_pylist()
    assert load_graph(incremental)[1].equals(load_graph(fresh)[1])


def test_bad_relation_inputs_fail_before_any_work(
    ray_local, tiny_relation_bundle, tiny_bundle, tmp_path
):
    inputs = make_inputs(tmp_path / "in")
    graph = tmp_path / "graph"
    with pytest.raises(RelationBundleError, match="is not a relation bundle"):
        build_graph(relation_config(inputs, graph, tiny_bundle))
    with pytest.raises(OpenMedError, match="scores Chemical-Disease pairs, which type_pairs"):
        build_graph(
            relation_config(inputs, graph, tiny_relation_bundle, type_pairs=("Chemical-Species",))
        )
    with pytest.raises(ConfigError, match="min_relation_score: needs a relation bundle"):
        make_config(*inputs, graph, min_relation_score=0.5)
    chemicals_only = tmp_path / "chemicals"
    write_partition(chemicals_only, "day1", ["d1"])
    table = pq.read_table(chemicals_only / "day1" / "entities" / "part-0.parquet")
    keep = [label == "Chemical" for label in table.column("label").to_pylist()]
    pq.write_table(
        table.filter(pa.array(keep)), chemicals_only / "day1" / "entities" / "part-0.parquet"
    )
    with pytest.raises(RelationBundleError, match="relates Chemical to Disease.*no Disease"):
        build_graph(
            relation_config((chemicals_only, inputs[1], inputs[2]), graph, tiny_relation_bundle)
        )
    assert GraphStore(graph).current() is None


def test_adding_relations_to_a_graph_needs_a_rebuild(
    ray_local, related, tiny_relation_bundle, tmp_path
):
    _, inputs, _, _ = related
    graph = tmp_path / "plain"
    entities, texts, dictionary = inputs
    build_graph(make_config(entities, texts, dictionary, graph))
    with pytest.raises(GraphSettingsError, match="relations"):
        build_graph(relation_config(inputs, graph, tiny_relation_bundle))
    summary = build_graph(relation_config(inputs, graph, tiny_relation_bundle, rebuild=True))
    assert summary["relations"]["scored_pairs"] > 0


def test_the_review_page_lists_each_documents_relations_with_evidence(related, tmp_path):
    from openmed_ray.annotate.review import render_review

    root, (entities, texts, _), graph, _ = related
    page = tmp_path / "review.html"
    shown = render_review(
        str(entities / "day1"), str(texts), str(page), sample=3, relations_graph=str(graph)
    )
    rows = [r for r in state_relations(graph).to_pylist() if r["doc_id"] in ("d1", "d2", "d3")]
    assert shown["relations_shown"] == len(rows) > 0
    html = page.read_text()
    assert html.count("<li>") == len(rows)
    for row in rows:
        evidence = TEXTS[row["doc_id"]][row["evidence_start"] : row["evidence_end"]]
        assert f'<span class="evidence">{evidence}</span>' in html
    plain = tmp_path / "plain"
    build_graph(make_config(*make_inputs(tmp_path / "in"), plain))
    with pytest.raises(OpenMedError, match="no relations; build it with `kg --relations"):
        render_review(str(entities / "day1"), str(texts), str(page), relations_graph=str(plain))
