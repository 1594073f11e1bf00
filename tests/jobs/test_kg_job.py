"""`ray job submit` of jobs/kg_extract.py with --relations against a `ray start --head` cluster."""

import json

import pytest

from openmed_ray.kg.store import GraphStore, load_graph
from tests.jobs.test_annotate_job import submit
from tests.kg.conftest import make_inputs

pytestmark = pytest.mark.slow


def test_kg_job_scores_relations_on_the_cluster(ray_head, tiny_relation_bundle, tmp_path):
    entities, texts, dictionary = make_inputs(tmp_path / "in")
    graph = tmp_path / "graph"
    result = submit(
        ray_head,
        "jobs/kg_extract.py",
        "--entities", str(entities),
        "--documents", str(texts),
        "--graph", str(graph),
        "--dictionary", str(dictionary),
        "--no-builtin-dictionary",
        "--relations", str(tiny_relation_bundle),
        "--min-relation-score", "0",
        "--relation-threads", "1",
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((GraphStore(graph).current().path / "summary.json").read_text())
    assert summary["relations"]["scored_pairs"] > 0
    assert (
        summary["relations"]["pairs_at_or_above_min_score"] == summary["relations"]["scored_pairs"]
    )
    _, edges = load_graph(graph)
    scored = [e for e in edges.to_pylist() if e["score"] is not None]
    assert scored and all(e["relation"] == "CID" and e["evidence_doc_id"] for e in scored)
