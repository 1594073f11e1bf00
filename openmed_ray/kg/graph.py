"""Co-occurrence counting and the additive graph tables.

Every quantity is a sum over documents, so tables from disjoint document sets add up
exactly (and subtract exactly when a partition is replaced):

    nodes     node_id, label, mention_count, doc_count, sentence_count
    surfaces  node_id, surface, count             (name = the most frequent surface form)
    edges     src, dst, level, pair_count, doc_count, examples
    tiers     tier, count                          (how mentions were linked)
    documents doc_id, n_sentences                  (the units NPMI divides by)

An edge joins two linked entities of different types (or of an allowed type pair) that
share a unit: a sentence (`level=sentence`) or a document (`level=document`). `pair_count`
counts shared units, `doc_count` documents with at least one; `examples` are the smallest
doc_ids, which stay exact under merges (the k smallest of a union are the k smallest of
the parts' k smallest). NPMI is derived from totals, never stored in a contribution:

    npmi(x, y) = ln(p(x,y) / (p(x) p(y))) / -ln p(x,y),   p(.) = units containing . / units
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from openmed_ray.kg.relations import RELATION_KEYS, RELATION_SCHEMA, attach_relations

NODE_SCHEMA = pa.schema(
    [
        ("node_id", pa.string()),
        ("label", pa.string()),
        ("mention_count", pa.int64()),
        ("doc_count", pa.int64()),
        ("sentence_count", pa.int64()),
    ]
)
SURFACE_SCHEMA = pa.schema(
    [("node_id", pa.string()), ("surface", pa.string()), ("count", pa.int64())]
)
EXAMPLES_TYPE = pa.list_(pa.string())
EDGE_SCHEMA = pa.schema(
    [
        ("src", pa.string()),
        ("dst", pa.string()),
        ("level", pa.string()),
        ("pair_count", pa.int64()),
        ("doc_count", pa.int64()),
        ("examples", EXAMPLES_TYPE),
    ]
)
EXPORT_NODE_COLUMNS = ["node_id", "label", "name", "mention_count", "doc_count", "sentence_count"]
EXPORT_EDGE_COLUMNS = ["src", "dst", "level", "pair_count", "doc_count", "npmi", "examples"]
EXAMPLES_SCHEMA = pa.schema(
    [
        ("src", pa.string()),
        ("dst", pa.string()),
        ("level", pa.string()),
        ("examples", EXAMPLES_TYPE),
    ]
)
TIER_SCHEMA = pa.schema([("tier", pa.string()), ("count", pa.int64())])
DOCUMENT_SCHEMA = pa.schema([("doc_id", pa.string()), ("n_sentences", pa.int64())])
SCHEMAS = {
    "nodes": NODE_SCHEMA,
    "surfaces": SURFACE_SCHEMA,
    "edges": EDGE_SCHEMA,
    "tiers": TIER_SCHEMA,
    "relations": RELATION_SCHEMA,
    "documents": DOCUMENT_SCHEMA,
}
KEYS = {
    "nodes": ["node_id", "label"],
    "surfaces": ["node_id", "surface"],
    "edges": ["src", "dst", "level"],
    "tiers": ["tier"],
    "relations": RELATION_KEYS,
}
COUNTS = {
    "nodes": ["mention_count", "doc_count", "sentence_count"],
    "surfaces": ["count"],
    "edges": ["pair_count", "doc_count"],
    "tiers": ["count"],
    "relations": ["count"],
}
ADDITIVE_TABLES = ("nodes", "surfaces", "edges", "tiers", "relations")
GraphTables = dict[str, pa.Table]


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    surface: str
    node_id: str
    label: str  # ontology type
    tier: str


class CooccurrenceCounter:
    """Accumulates the graph tables of a set of documents."""

    def __init__(
        self,
        levels: Iterable[str],
        allowed_pairs: frozenset[tuple[str, str]] | None,
        examples: int,
    ) -> None:
        self.levels = tuple(levels)
        self.allowed_pairs = allowed_pairs
        self.examples = examples
        self.nodes: dict[tuple[str, str], list[int]] = {}
        self.surfaces: Counter[tuple[str, str]] = Counter()
        self.edges: dict[tuple[str, str, str], list] = {}
        self.tiers: Counter[str] = Counter()
        self.documents: list[tuple[str, int]] = []
        self.relations: list[dict] = []

    def add_relations(self, rows: Iterable[dict]) -> None:
        """Scored candidate pairs of a document (see kg/relations.py)."""
        self.relations.extend(rows)

    def _pairs(self, nodes: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Edges among these (label, node_id) nodes: ordered by (label, id), types allowed."""
        pairs = []
        for first, second in itertools.combinations(sorted(set(nodes)), 2):
            if first[0] == second[0]:
                continue
            if self.allowed_pairs is not None and (first[0], second[0]) not in self.allowed_pairs:
                continue
            pairs.append((first[1], second[1]))
        return pairs

    def add_document(
        self, doc_id: str, sentences: Sequence[tuple[int, int]], mentions: Iterable[Mention]
    ) -> None:
        self.documents.append((doc_id, len(sentences)))
        unique = {(m.start, m.end, m.node_id): m for m in mentions}.values()
        starts = [start for start, _ in sentences]
        in_sentence: dict[int, set[tuple[str, str]]] = {}
        for mention in unique:
            key = (mention.node_id, mention.label)
            self.nodes.setdefault(key, [0, 0, 0])[0] += 1
            self.surfaces[(mention.node_id, mention.surface)] += 1
            self.tiers[mention.tier] += 1
            # the sentence holding the mention's start: the last one starting at or before it
            index = max(0, bisect.bisect_right(starts, mention.start) - 1)
            in_sentence.setdefault(index, set()).add((mention.label, mention.node_id))
        in_document = set().union(*in_sentence.values()) if in_sentence else set()
        for label, node_id in in_document:
            counts = self.nodes[(node_id, label)]
            counts[1] += 1
            counts[2] += sum((label, node_id) in nodes for nodes in in_sentence.values())
        units: Counter[tuple[str, str, str]] = Counter()
        if "document" in self.levels:
            units.update((src, dst, "document") for src, dst in self._pairs(in_document))
        if "sentence" in self.levels:
            for nodes in in_sentence.values():
                units.update((src, dst, "sentence") for src, dst in self._pairs(nodes))
        for key, count in units.items():
            edge = self.edges.setdefault(key, [0, 0, []])
            edge[0] += count
            edge[1] += 1
            _keep_smallest(edge[2], doc_id, self.examples)

    def tables(self) -> GraphTables:
        nodes = sorted(self.nodes.items())
        edges = sorted(self.edges.items())
        surfaces = sorted(self.surfaces.items())
        return {
            "nodes": pa.table(
                {
                    "node_id": [k[0] for k, _ in nodes],
                    "label": [k[1] for k, _ in nodes],
                    "mention_count": [v[0] for _, v in nodes],
                    "doc_count": [v[1] for _, v in nodes],
                    "sentence_count": [v[2] for _, v in nodes],
                },
                schema=NODE_SCHEMA,
            ),
            "surfaces": pa.table(
                {
                    "node_id": [k[0] for k, _ in surfaces],
                    "surface": [k[1] for k, _ in surfaces],
                    "count": [v for _, v in surfaces],
                },
                schema=SURFACE_SCHEMA,
            ),
            "edges": pa.table(
                {
                    "src": [k[0] for k, _ in edges],
                    "dst": [k[1] for k, _ in edges],
                    "level": [k[2] for k, _ in edges],
                    "pair_count": [v[0] for _, v in edges],
                    "doc_count": [v[1] for _, v in edges],
                    "examples": [sorted(v[2]) for _, v in edges],
                },
                schema=EDGE_SCHEMA,
            ),
            "tiers": pa.table(
                {"tier": list(self.tiers), "count": list(self.tiers.values())}, schema=TIER_SCHEMA
            ),
            "relations": sort_table(
                pa.Table.from_pylist(self.relations, schema=RELATION_SCHEMA), "relations"
            ),
            "documents": pa.table(
                {
                    "doc_id": [d for d, _ in self.documents],
                    "n_sentences": [n for _, n in self.documents],
                },
                schema=DOCUMENT_SCHEMA,
            ),
        }


def _keep_smallest(smallest: list[str], doc_id: str, k: int) -> None:
    """Keep `smallest` the sorted k smallest doc_ids seen."""
    if k == 0 or doc_id in smallest:
        return
    if len(smallest) < k:
        bisect.insort(smallest, doc_id)
    elif doc_id < smallest[-1]:
        smallest.pop()
        bisect.insort(smallest, doc_id)


def empty_tables() -> GraphTables:
    return {name: schema.empty_table() for name, schema in SCHEMAS.items()}


def sort_table(table: pa.Table, name: str) -> pa.Table:
    return table.sort_by([(c, "ascending") for c in KEYS.get(name, ["doc_id"])])


def _run_starts(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """For a table sorted by `columns`: whether each row starts a new run of equal keys."""
    changed = np.zeros(table.num_rows, dtype=bool)
    if table.num_rows:
        changed[0] = True
        for column in columns:
            values = table.column(column).to_numpy(zero_copy_only=False)
            changed[1:] |= values[1:] != values[:-1]
    return changed


def smallest_examples(edge_tables: Sequence[pa.Table], k: int) -> pa.Table:
    """(src, dst, level, examples): the k smallest doc_ids per edge across the tables."""
    keys = KEYS["edges"]
    parts = [t.select([*keys, "examples"]) for t in edge_tables if t.num_rows]
    if not parts or k == 0:
        return EXAMPLES_SCHEMA.empty_table()
    table = pa.concat_tables(parts)
    lists = table.column("examples").combine_chunks()
    parents = pc.list_parent_indices(lists)
    flat = pa.table(
        {**{c: pc.take(table.column(c), parents) for c in keys}, "doc_id": pc.list_flatten(lists)}
    )
    flat = (
        flat.group_by([*keys, "doc_id"], use_threads=False)
        .aggregate([])
        .sort_by([(c, "ascending") for c in [*keys, "doc_id"]])
    )
    # keep each edge's first k rows: position minus the position where the edge's run starts
    starts = _run_starts(flat, keys)
    positions = np.arange(flat.num_rows)
    run_start = np.maximum.accumulate(np.where(starts, positions, 0))
    flat = flat.filter(pa.array(positions - run_start < k))
    starts = _run_starts(flat, keys)
    offsets = np.append(np.flatnonzero(starts), flat.num_rows).astype(np.int32)
    firsts = pa.array(offsets[:-1])
    return pa.table(
        {
            **{c: flat.column(c).take(firsts) for c in keys},
            "examples": pa.ListArray.from_arrays(
                pa.array(offsets), flat.column("doc_id").combine_chunks()
            ),
        },
        schema=EXAMPLES_SCHEMA,
    )


def match_rows(left: pa.Table, right: pa.Table, keys: Sequence[str]) -> np.ndarray:
    """For each row of `left`, the row of `right` with the same keys (-1 if none); `right`'s
    keys are unique. (Acero joins cannot carry list columns, so joins go through indices.)"""
    tagged_left = left.select(keys).append_column("_left", pa.array(np.arange(left.num_rows)))
    tagged_right = right.select(keys).append_column("_right", pa.array(np.arange(right.num_rows)))
    joined = tagged_left.join(tagged_right, keys=list(keys), join_type="left outer")
    rows = np.full(left.num_rows, -1, dtype=np.int64)
    rows[joined.column("_left").to_numpy()] = (
        joined.column("_right").fill_null(-1).to_numpy(zero_copy_only=False)
    )
    return rows


def with_examples(edges: pa.Table, examples: pa.Table) -> pa.Table:
    """`edges` whose examples are replaced by the lists in `examples`; edges it lacks keep
    theirs (or get an empty list when `edges` has no examples column)."""
    rows = match_rows(edges, examples, KEYS["edges"])
    current = (
        edges.column("examples").combine_chunks()
        if "examples" in edges.column_names
        else pa.array([[]] * edges.num_rows, EXAMPLES_TYPE)
    )
    replacement = examples.column("examples").combine_chunks()
    picks = np.where(rows >= 0, len(current) + rows, np.arange(len(current)))
    chosen = pa.concat_arrays([current.cast(EXAMPLES_TYPE), replacement]).take(pa.array(picks))
    columns = {c: edges.column(c) for c in edges.column_names if c != "examples"}
    columns["examples"] = pa.array(chosen, EXAMPLES_TYPE)
    return sort_table(pa.table(columns).select(EDGE_SCHEMA.names).cast(EDGE_SCHEMA), "edges")


def add_tables(parts: Sequence[tuple[GraphTables, int]], examples: int) -> GraphTables:
    """The sum of signed table sets (+1 adds, -1 subtracts); rows whose counts all reach 0
    vanish. Examples come from the added parts only: after a subtraction the caller
    recomputes them for the edges concerned (`smallest_examples`, `with_examples`).
    Documents are concatenated from the added parts."""
    result: GraphTables = {}
    for name in ADDITIVE_TABLES:
        keys, counts = KEYS[name], COUNTS[name]
        signed = []
        for tables, sign in parts:
            table = tables.get(name, SCHEMAS[name].empty_table())
            if table.num_rows:
                columns = {c: table.column(c) for c in keys}
                columns.update({c: pc.multiply(table.column(c), sign) for c in counts})
                signed.append(pa.table(columns))
        if not signed:
            result[name] = SCHEMAS[name].empty_table()
            continue
        summed = (
            pa.concat_tables(signed)
            .group_by(keys, use_threads=False)
            .aggregate([(c, "sum") for c in counts])
            .rename_columns([*keys, *counts])
        )
        alive = pc.greater(summed.column(counts[0]), 0)
        for column in counts[1:]:
            alive = pc.or_(alive, pc.greater(summed.column(column), 0))
        summed = summed.filter(alive)
        if name == "edges":
            added = [tables["edges"] for tables, sign in parts if sign > 0]
            result[name] = with_examples(summed, smallest_examples(added, examples))
        else:
            result[name] = sort_table(summed.cast(SCHEMAS[name]), name)
    documents = [t["documents"] for t, sign in parts if sign > 0 and "documents" in t]
    result["documents"] = pa.concat_tables([DOCUMENT_SCHEMA.empty_table(), *documents])
    return result


def node_names(surfaces: pa.Table) -> pa.Table:
    """(node_id, name): each node's most frequent surface form, ties to the smallest."""
    ordered = surfaces.sort_by(
        [("node_id", "ascending"), ("count", "descending"), ("surface", "ascending")]
    )
    chosen = ordered.filter(pa.array(_run_starts(ordered, ["node_id"])))
    return pa.table({"node_id": chosen.column("node_id"), "name": chosen.column("surface")})


def npmi(pair: np.ndarray, first: np.ndarray, second: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Normalized PMI in [-1, 1] from unit counts (1 when a pair fills every unit)."""
    units = np.maximum(units.astype(np.float64), 1.0)
    p_xy = pair / units
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.log(p_xy / ((first / units) * (second / units))) / -np.log(p_xy)
    return np.where(p_xy >= 1.0, 1.0, value)


def finalize(
    tables: GraphTables, documents: int, sentences: int, min_relation_score: float | None = None
) -> tuple[pa.Table, pa.Table]:
    """Export-ready (nodes with names, edges with NPMI and relation scores) from totals."""
    nodes = tables["nodes"].join(node_names(tables["surfaces"]), keys="node_id")
    nodes = sort_table(nodes.select(EXPORT_NODE_COLUMNS), "nodes")
    edges = tables["edges"]
    by_document = pc.equal(edges.column("level"), "document").to_numpy(zero_copy_only=False)
    node_keys = nodes.select(["node_id"])

    def unit_counts(end: str) -> np.ndarray:
        rows = match_rows(edges.select([end]).rename_columns(["node_id"]), node_keys, ["node_id"])
        docs = nodes.column("doc_count").to_numpy()[rows]
        sentences_of = nodes.column("sentence_count").to_numpy()[rows]
        return np.where(by_document, docs, sentences_of).astype(np.float64)

    values = npmi(
        edges.column("pair_count").to_numpy().astype(np.float64),
        unit_counts("src"),
        unit_counts("dst"),
        np.where(by_document, documents, sentences),
    )
    edges = edges.append_column("npmi", pa.array(values, pa.float64()))
    relations = tables.get("relations", RELATION_SCHEMA.empty_table())
    return nodes, attach_relations(edges.select(EXPORT_EDGE_COLUMNS), relations, min_relation_score)
