"""A relation bundle's graph threshold, chosen on dev documents through the whole pipeline.

The threshold a relation bundle is trained with is chosen on gold mentions, where every gold
pair is a candidate. In a graph the mentions are predicted and linked: pairs whose entities
were missed or mislinked never become candidates, and those that do are easier, so that
threshold is too strict (on BC5CDR: end-to-end test F1 0.434 at it, 0.451 at the one chosen
here). `calibrate_relations` runs what a graph run does on documents with gold relations
(PubTator): `annotate` with the NER adapters, `kg --relations` with every score exported,
and keeps the threshold with the best document-level F1 against the gold relations. The
card's `pipeline_threshold` then becomes the graph's default export threshold.

Only pairs whose two entities link to ontology IDs are scored against the gold relations:
a gold relation joins two concepts, so a pair with an unlinked end can be neither right nor
wrong; the record counts them apart.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from openmed_ray.annotate.pipeline import annotate_corpus
from openmed_ray.config import (
    AnnotateConfig,
    KGConfig,
    RelationCalibrationConfig,
    resolve_data_root,
)
from openmed_ray.errors import OpenMedError
from openmed_ray.eval.relations import Triple, best_threshold
from openmed_ray.io.pubtator import read_pubtator, write_texts
from openmed_ray.kg.normalize import canonical_id, is_local_id
from openmed_ray.kg.pipeline import build_graph
from openmed_ray.kg.relations import RelationSpec, relation_spec
from openmed_ray.kg.store import GraphStore
from openmed_ray.models.bundle import update_card
from openmed_ray.relations.examples import from_pubtator, gold_triples

log = logging.getLogger(__name__)

__all__ = ["CalibrationError", "calibrate_relations"]


class CalibrationError(OpenMedError):
    """Dev documents or a pipeline run that cannot calibrate a threshold."""


def calibrate_relations(
    config: RelationCalibrationConfig, address: str | None = None
) -> dict[str, Any]:
    """Annotate, link and score the gold file's documents, choose the best-F1 threshold and
    (with `write_card`) store it in the bundle's card as `pipeline_threshold`. Returns that
    record. Everything is checked before the first document is annotated."""
    spec = relation_spec(config.bundle)
    documents = read_pubtator(config.gold)
    gold = _gold(config.gold, documents, spec)
    work = _empty_work_directory(config.work)

    texts = write_texts(documents, work / "texts" / "documents.parquet")
    annotated = annotate_corpus(
        AnnotateConfig(
            input=str(texts),
            output=str(work / "entities" / "dev"),
            adapters=config.adapters,
            precision=config.precision,
            max_actors=config.max_actors,
            threads_per_actor=config.threads_per_actor,
        ),
        address=address,
    )
    if annotated["errors"]:
        raise CalibrationError(
            f"calibration: {annotated['errors']} of the {len(documents)} documents of "
            f"{config.gold} failed to annotate ({annotated['error_reasons']}; see the "
            f"`documents` rows of {annotated['output']}); a threshold chosen without them "
            "would not be the dev set's"
        )
    graph = work / "graph"
    build_graph(
        KGConfig(
            entities=str(work / "entities"),
            documents=str(texts),
            graph=str(graph),
            type_pairs=(f"{spec.task.head_type}-{spec.task.tail_type}",),
            relations=config.bundle,
            relation_threads=config.relation_threads,
            min_relation_score=0.0,  # every score: the threshold is what is being chosen
            linker=config.linker,
        ),
        address=address,
    )
    scored, unlinked = _scored_pairs(graph, spec)
    best = best_threshold(scored, gold)
    if best.hits == 0:
        raise CalibrationError(
            f"calibration: none of the {len(scored)} scored pairs of linked entities is one of "
            f"the {len(gold)} gold relations of {config.gold}: do the linker's IDs (e.g. MESH:"
            "D009270) name the gold file's concepts? (--dictionary adds a TSV of string, ID, type)"
        )
    record = {
        "threshold": round(best.threshold, 6),
        "chosen_on": f"{_data_path(config.gold, config.linker.data_root)} ({len(documents)} "
        "documents), predicted and linked mentions",
        "linker_dictionary_splits": list(config.linker.builtin_splits)
        if config.linker.builtin
        else [],
        "linker_dictionaries": list(config.linker.dictionaries),
        "ner_adapters": {a["adapter"]: a["version"] for a in annotated["adapter_versions"]},
        "ner_precision": {
            name: choice["precision"]
            for name, choice in annotated["precision"]["by_adapter"].items()
        },
        "scored_pairs": len(scored),
        "pairs_with_an_unlinked_entity": unlinked,
        "dev": best.to_dict(),
    }
    if config.write_card:
        update_card(spec.path, pipeline_threshold=record)
        log.info("calibration: %s's pipeline_threshold is now %s", spec.name, record["threshold"])
    return record


def _data_path(path: str, data_root: str | None) -> str:
    """`path` relative to the data root when it lies inside it (a card names no machine)."""
    try:
        return str(Path(path).resolve().relative_to(resolve_data_root(data_root)))
    except (ValueError, OSError):
        return path


def _empty_work_directory(path: str) -> Path:
    work = Path(path).expanduser()
    if work.exists() and (not work.is_dir() or any(work.iterdir())):
        raise CalibrationError(
            f"calibration: work directory {work} is not empty; the texts, annotations and graph "
            "of a calibration go to a new directory (remove it or choose another)"
        )
    work.mkdir(parents=True, exist_ok=True)
    return work


def _gold(path: str, documents: list, spec: RelationSpec) -> set[Triple]:
    """The gold relations of the bundle's labels, their concept IDs spelled as the linker's."""
    if not documents:
        raise CalibrationError(f"calibration: {path} holds no PubTator documents")
    gold = {
        (doc_id, canonical_id(head), canonical_id(tail), label)
        for doc_id, head, tail, label in gold_triples(from_pubtator(documents, spec.task))
    }
    if not gold:
        raise CalibrationError(
            f"calibration: {path} has no {'/'.join(spec.task.relations)} relations between "
            f"{spec.task.head_type} and {spec.task.tail_type} (the relations of bundle "
            f"{spec.name}) to choose a threshold against"
        )
    return gold


def _scored_pairs(graph: Path, spec: RelationSpec) -> tuple[list[tuple[Triple, float]], int]:
    """((doc, head, tail, relation), score) of every scored pair of linked entities, and the
    number of scored pairs left out because an entity linked to no concept."""
    store = GraphStore(graph)
    tables, _ = store.read_state(store.current())
    scored, unlinked = [], 0
    for row in tables["relations"].to_pylist():
        if is_local_id(row["head"], spec.task.head_type) or is_local_id(
            row["tail"], spec.task.tail_type
        ):
            unlinked += 1
            continue
        scored.append(((row["doc_id"], row["head"], row["tail"], row["relation"]), row["score"]))
    return scored, unlinked
