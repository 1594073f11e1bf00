"""Exports round-trip: GraphML parses back to the same graph; Neo4j CSVs follow the import
format."""

import csv
import xml.etree.ElementTree as ET

import networkx as nx
import pytest

from openmed_ray.kg.export import (
    NEO4J_EDGE_HEADER,
    NEO4J_NODE_HEADER,
    relationship_type,
    write_exports,
)
from openmed_ray.kg.graph import CooccurrenceCounter, Mention, finalize


@pytest.fixture
def graph():
    counter = CooccurrenceCounter(("sentence", "document"), None, 3)
    docs = {
        "doc<1>": [(0, "MESH:D1", "Chemical", 'A & "B"'), (5, "Disease:x <y>", "Disease", "x <y>")],
        "doc;2": [(0, "MESH:D1", "Chemical", "a&b"), (30, "Disease:x <y>", "Disease", "x\x01y")],
    }  # fmt: skip
    for doc_id, mentions in docs.items():
        counter.add_document(
            doc_id,
            [(0, 20), (21, 40)],
            [Mention(s, s + 3, text, node, label, "exact") for s, node, label, text in mentions],
        )
    return finalize(counter.tables(), documents=2, sentences=4)


def test_graphml_round_trips(graph, tmp_path):
    nodes, edges = graph
    export = write_exports(tmp_path, nodes, edges, min_count=1)
    parsed = nx.read_graphml(export / "graph.graphml")
    assert isinstance(parsed, nx.MultiGraph)  # sentence and document edges of one pair
    # XML 1.0 cannot carry control characters: GraphML drops them
    assert {n: dict(d) for n, d in parsed.nodes(data=True)} == {
        row["node_id"]: {k: v for k, v in row.items() if k != "node_id"}
        | {"name": row["name"].replace("\x01", "")}
        for row in nodes.to_pylist()
    }
    assert "x\x01y" in nodes.column("name").to_pylist()
    expected = sorted(
        (r["src"], r["dst"], r["level"], r["pair_count"], r["doc_count"], r["npmi"], ";".join(r["examples"]))
        for r in edges.to_pylist()
    )  # fmt: skip
    found = sorted(
        (*sorted((u, v)), d["level"], d["pair_count"], d["doc_count"], d["npmi"], d["examples"])
        for u, v, d in parsed.edges(data=True)
    )
    assert found == sorted((*sorted(e[:2]), *e[2:]) for e in expected)
    assert ET.parse(export / "graph.graphml").getroot().tag.endswith("graphml")


def test_neo4j_csvs_follow_the_import_format(graph, tmp_path):
    nodes, edges = graph
    export = write_exports(tmp_path, nodes, edges, min_count=1)
    with (export / "neo4j" / "nodes.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == NEO4J_NODE_HEADER
    assert rows[0][0].endswith(":ID") and ":LABEL" in rows[0]
    assert {r[0]: r[2] for r in rows[1:]} == {
        "MESH:D1": "Entity;Chemical",
        "Disease:x <y>": "Entity;Disease",
    }
    with (export / "neo4j" / "edges.csv").open(newline="") as handle:
        edge_rows = list(csv.DictReader(handle))
    assert list(edge_rows[0]) == NEO4J_EDGE_HEADER
    assert [h for h in NEO4J_EDGE_HEADER if ":" in h and not h.startswith(":")] == [
        "pair_count:int",
        "doc_count:int",
        "npmi:float",
        "examples:string[]",
        "score:float",
        "relation_doc_count:int",
        "evidence_start:int",
        "evidence_end:int",
    ]
    assert {(r[":START_ID"], r[":END_ID"], r[":TYPE"]) for r in edge_rows} == {
        (r["src"], r["dst"], relationship_type(r["level"])) for r in edges.to_pylist()
    }
    sentence = next(r for r in edge_rows if r[":TYPE"] == "CO_OCCURS_IN_SENTENCE")
    assert int(sentence["pair_count:int"]) == 1 and float(sentence["npmi:float"]) <= 1.0


def test_min_count_filters_exported_edges_only(graph, tmp_path):
    nodes, edges = graph
    export = write_exports(tmp_path, nodes, edges, min_count=2)
    parsed = nx.read_graphml(export / "graph.graphml")
    assert [d["level"] for _, _, d in parsed.edges(data=True)] == ["document"]
    assert parsed.number_of_nodes() == nodes.num_rows
