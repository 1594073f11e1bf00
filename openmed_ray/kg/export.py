"""Graph exports: Parquet, GraphML and `neo4j-admin database import` CSVs.

    export/nodes.parquet      node_id, label, name, mention_count, doc_count, sentence_count
    export/edges.parquet      src, dst, level, pair_count, doc_count, npmi, examples,
                              relation, score, relation_doc_count, evidence_doc_id,
                              evidence_start, evidence_end (null unless a relation bundle
                              scored the pair)
    export/relations.parquet  with a relation bundle: doc_id, head, tail, relation, score,
                              evidence_start, evidence_end per document, score >= the minimum
    export/graph.graphml      undirected; one edge per (pair, level), so a pair seen at both
                              levels has two parallel edges
    export/neo4j/nodes.csv    node_id:ID, name, :LABEL (Entity;<type>), counts as :int
    export/neo4j/edges.csv    :START_ID, :END_ID, :TYPE (CO_OCCURS_IN_SENTENCE|_DOCUMENT),
                              counts :int, npmi :float, examples :string[] (';'-separated)

    neo4j-admin database import full --nodes=export/neo4j/nodes.csv \
        --relationships=export/neo4j/edges.csv neo4j

Exports hold the edges with `pair_count >= min_count` and, for the type pair a relation
bundle scores, a relation scored at least `min_relation_score`; the state keeps everything.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

EXPORT = "export"
GRAPHML_NAMESPACE = "http://graphml.graphdrawing.org/xmlns"
NODE_ATTRIBUTES = [
    ("label", "string"),
    ("name", "string"),
    ("mention_count", "long"),
    ("doc_count", "long"),
    ("sentence_count", "long"),
]
EDGE_ATTRIBUTES = [
    ("level", "string"),
    ("pair_count", "long"),
    ("doc_count", "long"),
    ("npmi", "double"),
    ("examples", "string"),
    ("relation", "string"),
    ("score", "double"),
    ("relation_doc_count", "long"),
    ("evidence_doc_id", "string"),
    ("evidence_start", "long"),
    ("evidence_end", "long"),
]
NEO4J_NODE_HEADER = [
    "node_id:ID",
    "name",
    ":LABEL",
    "mention_count:int",
    "doc_count:int",
    "sentence_count:int",
]
NEO4J_EDGE_HEADER = [
    ":START_ID",
    ":END_ID",
    ":TYPE",
    "pair_count:int",
    "doc_count:int",
    "npmi:float",
    "examples:string[]",
    "relation",
    "score:float",
    "relation_doc_count:int",
    "evidence_doc_id",
    "evidence_start:int",
    "evidence_end:int",
]
NEO4J_RELATION_COLUMNS = [
    "relation",
    "score",
    "relation_doc_count",
    "evidence_doc_id",
    "evidence_start",
    "evidence_end",
]
EXAMPLE_SEPARATOR = ";"
# Characters XML 1.0 cannot carry at all.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def relationship_type(level: str) -> str:
    return f"CO_OCCURS_IN_{level.upper()}"


def _xml_text(value: object) -> str:
    return _NOT_XML.sub("", str(value))


def _value(value: object) -> object:
    return EXAMPLE_SEPARATOR.join(value) if isinstance(value, list) else value


def write_graphml(path: Path, nodes: pa.Table, edges: pa.Table) -> None:
    """Stream the graph as GraphML (written here, so no dependency and constant memory)."""
    with path.open("w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        out.write(f'<graphml xmlns="{GRAPHML_NAMESPACE}">\n')
        for domain, attributes in (("node", NODE_ATTRIBUTES), ("edge", EDGE_ATTRIBUTES)):
            for name, kind in attributes:
                out.write(
                    f'  <key id="{domain[0]}_{name}" for="{domain}" attr.name="{name}" '
                    f'attr.type="{kind}"/>\n'
                )
        out.write('  <graph id="openmed-ray-kg" edgedefault="undirected">\n')
        for batch in nodes.to_batches():
            for row in batch.to_pylist():
                out.write(f"    <node id={quoteattr(_xml_text(row['node_id']))}>")
                for name, _ in NODE_ATTRIBUTES:
                    out.write(f'<data key="n_{name}">{escape(_xml_text(row[name]))}</data>')
                out.write("</node>\n")
        for index, row in enumerate(r for b in edges.to_batches() for r in b.to_pylist()):
            out.write(
                f'    <edge id="e{index}" source={quoteattr(_xml_text(row["src"]))} '
                f"target={quoteattr(_xml_text(row['dst']))}>"
            )
            for name, _ in EDGE_ATTRIBUTES:
                if row[name] is None:
                    continue  # GraphML: an absent value, not an empty one
                text = escape(_xml_text(_value(row[name])))
                out.write(f'<data key="e_{name}">{text}</data>')
            out.write("</edge>\n")
        out.write("  </graph>\n</graphml>\n")


def write_neo4j(directory: Path, nodes: pa.Table, edges: pa.Table) -> None:
    """Header-in-file CSVs for `neo4j-admin database import full`."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "nodes.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(NEO4J_NODE_HEADER)
        for batch in nodes.to_batches():
            for row in batch.to_pylist():
                writer.writerow(
                    [
                        row["node_id"],
                        row["name"],
                        f"Entity;{row['label']}",
                        row["mention_count"],
                        row["doc_count"],
                        row["sentence_count"],
                    ]
                )
    with (directory / "edges.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(NEO4J_EDGE_HEADER)
        for batch in edges.to_batches():
            for row in batch.to_pylist():
                writer.writerow(
                    [
                        row["src"],
                        row["dst"],
                        relationship_type(row["level"]),
                        row["pair_count"],
                        row["doc_count"],
                        repr(row["npmi"]),
                        _value(row["examples"]),
                        *("" if row[n] is None else row[n] for n in NEO4J_RELATION_COLUMNS),
                    ]
                )


def _drop_unrelated(edges: pa.Table, nodes: pa.Table, types: tuple[str, str]) -> pa.Table:
    """Edges of the scored type pair whose relation fell below the minimum score go."""
    label = dict(
        zip(nodes.column("node_id").to_pylist(), nodes.column("label").to_pylist(), strict=True)
    )
    wanted = sorted(types)
    keep = [
        relation is not None or sorted((label.get(src), label.get(dst))) != wanted
        for src, dst, relation in zip(
            edges.column("src").to_pylist(),
            edges.column("dst").to_pylist(),
            edges.column("relation").to_pylist(),
            strict=True,
        )
    ]
    return edges.filter(pa.array(keep, pa.bool_()))


def write_exports(
    state_dir: Path,
    nodes: pa.Table,
    edges: pa.Table,
    min_count: int,
    relations: tuple[tuple[str, str], pa.Table] | None = None,
) -> Path:
    """Every export of one graph state into STATE/export; returns that directory.

    `relations`: (the scored type pair, the per-document relations to export)."""
    directory = state_dir / EXPORT
    directory.mkdir(parents=True, exist_ok=True)
    edges = edges.filter(pc.greater_equal(edges.column("pair_count"), min_count))
    if relations is not None:
        types, per_document = relations
        edges = _drop_unrelated(edges, nodes, types)
        pq.write_table(per_document, directory / "relations.parquet")
    pq.write_table(nodes, directory / "nodes.parquet")
    pq.write_table(edges, directory / "edges.parquet")
    write_graphml(directory / "graph.graphml", nodes, edges)
    write_neo4j(directory / "neo4j", nodes, edges)
    return directory
