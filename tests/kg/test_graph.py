"""Co-occurrence counts, NPMI and exact addition/subtraction of graph tables."""

import math

import numpy as np
import pytest

from openmed_ray.kg.graph import (
    CooccurrenceCounter,
    Mention,
    add_tables,
    finalize,
    smallest_examples,
    with_examples,
)

SENTENCES = [(0, 10), (11, 20)]
# doc_id -> mentions (start, node, label); start < 11 is sentence 0, else sentence 1
DOCS = {
    "a": [(0, "C1", "Chemical"), (4, "D1", "Disease"), (12, "D2", "Disease"), (15, "G1", "Gene")],
    "b": [(0, "C1", "Chemical"), (12, "D1", "Disease")],
    "c": [(0, "C1", "Chemical"), (3, "C1", "Chemical"), (5, "D1", "Disease")],
    "d": [],
}


def mentions(doc_id):
    return [Mention(s, s + 2, f"{node.lower()}-{s}", node, label, "exact") for s, node, label in DOCS[doc_id]]  # fmt: skip


def tables(doc_ids, levels=("sentence", "document"), pairs=None, examples=2):
    counter = CooccurrenceCounter(levels, pairs, examples)
    for doc_id in doc_ids:
        counter.add_document(doc_id, SENTENCES, mentions(doc_id))
    return counter.tables()


def edge_rows(table):
    return {
        (r["src"], r["dst"], r["level"]): (r["pair_count"], r["doc_count"], r["examples"])
        for r in table.to_pylist()
    }


def test_counts_per_level():
    result = tables(["a", "b", "c", "d"])
    nodes = {r["node_id"]: r for r in result["nodes"].to_pylist()}
    assert (nodes["C1"]["mention_count"], nodes["C1"]["doc_count"]) == (4, 3)
    assert nodes["C1"]["sentence_count"] == 3  # two mentions in one sentence of c count once
    assert nodes["D1"]["sentence_count"] == 3
    edges = edge_rows(result["edges"])
    assert edges[("C1", "D1", "document")] == (3, 3, ["a", "b"])
    assert edges[("C1", "D1", "sentence")] == (2, 2, ["a", "c"])  # b has them apart
    assert edges[("D2", "G1", "sentence")] == (1, 1, ["a"])
    # same-type pairs never form edges
    assert ("D1", "D2", "document") not in edges
    assert result["documents"].to_pylist()[-1] == {"doc_id": "d", "n_sentences": 2}
    assert dict(zip(*result["tiers"].to_pydict().values(), strict=True)) == {"exact": 9}


def test_type_pairs_and_levels_restrict_edges():
    result = tables(["a"], levels=("document",), pairs=frozenset({("Chemical", "Disease")}))
    assert set(edge_rows(result["edges"])) == {
        ("C1", "D1", "document"),
        ("C1", "D2", "document"),
    }


def test_npmi_matches_the_formula():
    nodes, edges = finalize(tables(["a", "b", "c", "d"]), documents=4, sentences=8)
    rows = {(r["src"], r["dst"], r["level"]): r["npmi"] for r in edges.to_pylist()}
    # document level: C1 in 3 of 4 docs, D1 in 3, together in 3
    p_xy, p_x, p_y = 3 / 4, 3 / 4, 3 / 4
    assert rows[("C1", "D1", "document")] == pytest.approx(
        math.log(p_xy / (p_x * p_y)) / -math.log(p_xy)
    )
    # sentence level: D2 and G1 each fill one sentence of 8, the same one
    assert rows[("D2", "G1", "sentence")] == pytest.approx(1.0)
    assert all(-1.0 <= v <= 1.0 for v in rows.values())
    names = dict(
        zip(nodes.column("node_id").to_pylist(), nodes.column("name").to_pylist(), strict=True)
    )
    assert names["C1"] == "c1-0"  # the most frequent surface form (3 of 4 mentions start at 0)


def test_parts_add_up_exactly_and_subtract_back():
    whole = tables(["a", "b", "c", "d"])
    first, second = tables(["a", "b"]), tables(["c", "d"])
    summed = add_tables([(first, 1), (second, 1)], examples=2)
    for name in ("nodes", "surfaces", "edges", "tiers"):
        assert summed[name].equals(add_tables([(whole, 1)], examples=2)[name]), name
    back = add_tables([(summed, 1), (second, -1)], examples=2)
    back["edges"] = with_examples(back["edges"], smallest_examples([first["edges"]], 2))
    expected = add_tables([(first, 1)], examples=2)
    for name in ("nodes", "surfaces", "edges", "tiers"):
        assert back[name].equals(expected[name]), name


def test_smallest_examples_of_a_union():
    first, second = tables(["b", "c"], examples=1), tables(["a"], examples=1)
    merged = smallest_examples([first["edges"], second["edges"]], 1)
    rows = {(r["src"], r["dst"], r["level"]): r["examples"] for r in merged.to_pylist()}
    assert rows[("C1", "D1", "document")] == ["a"]
    assert np.all([len(v) == 1 for v in rows.values()])
