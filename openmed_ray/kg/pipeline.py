"""The knowledge-graph run: new partitions -> Ray Data -> contributions -> merged state.

1. Discover ENTITIES_DIR's partitions and hash them; plan against the manifest (new,
   replaced, unchanged; a changed partition is refused unless replaced).
2. Assign each document of the partitions to derive to one partition: a doc_id already in
   the graph (or in an earlier partition of this run) is skipped, so nothing counts twice.
3. Ray Data reads the texts (DOCS_DIR) and, in a `map_batches` actor pool, joins each
   document with its entities (broadcast through the object store: entities are small next
   to texts), splits sentences, finds abbreviation definitions, links every mention and
   counts co-occurrences. Each batch returns partial tables per partition; the driver adds
   them up into one contribution per partition.
4. The store writes the contributions, adds them to the previous totals (subtracting the
   old contributions of replaced partitions), recomputes names and NPMI, writes a new state
   with its exports and switches the pointer atomically.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from openmed_ray.config import KGConfig
from openmed_ray.errors import OpenMedError
from openmed_ray.io.claim import Claim, acquire_claim
from openmed_ray.io.corpus import inspect_corpus, read_parquet_dataset
from openmed_ray.io.filesystem import ray_remote_env, resolve
from openmed_ray.kg.abbreviations import abbreviation_map, find_abbreviations
from openmed_ray.kg.export import write_exports
from openmed_ray.kg.graph import (
    KEYS,
    CooccurrenceCounter,
    GraphTables,
    Mention,
    add_tables,
    finalize,
    match_rows,
    smallest_examples,
    with_examples,
)
from openmed_ray.kg.linker import Linker, build_linker, entity_type
from openmed_ray.kg.partitions import (
    content_hash,
    discover_partitions,
    read_document_ids,
    read_entities,
)
from openmed_ray.kg.relations import (
    RelationScorer,
    RelationSpec,
    check_entity_types,
    exported_relations,
    relation_spec,
)
from openmed_ray.kg.store import (
    STATE_DOCUMENT_SCHEMA,
    TABLES,
    GraphStore,
    MergePlan,
    fault_point,
    plan_merge,
)
from openmed_ray.runtime import ensure_ray
from openmed_ray.text.tokenize import sentence_spans

log = logging.getLogger(__name__)
PARTIAL_TABLES = ("nodes", "surfaces", "edges", "tiers", "relations", "documents")
# Partial tables merged on the driver at a time (bounds its memory on big runs).
MERGE_EVERY = 64


class MissingTextError(OpenMedError):
    """Documents to merge have no text in DOCS_DIR."""


def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def _text(value: object) -> str | None:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None


def graph_settings(
    config: KGConfig, linker: Linker, relations: RelationSpec | None = None
) -> dict[str, Any]:
    """Everything that shapes a contribution: a graph only merges runs with equal settings."""
    pairs = config.allowed_type_pairs
    settings = {
        "levels": sorted(config.levels),
        "type_pairs": sorted("-".join(p) for p in pairs) if pairs else [],
        "min_score": config.min_score,
        "examples": config.examples,
        "dictionary": linker.version,
        "threshold": config.linker.threshold,
        "ngram": config.linker.ngram,
        "tiers": sorted(config.linker.tiers),
        "label_types": dict(sorted(config.linker.label_map.items())),
    }
    if relations is not None:  # absent otherwise, so graphs built before relations still match
        settings["relations"] = {"bundle": relations.name, "version": relations.version}
    return settings


def check_relations(config: KGConfig) -> RelationSpec | None:
    """The relation bundle, checked against the graph's type pairs before any work."""
    if not config.relations:
        return None
    spec = relation_spec(config.relations)
    allowed = config.allowed_type_pairs
    if allowed is not None and tuple(sorted(spec.types)) not in allowed:
        raise OpenMedError(
            f"relations: bundle {spec.name} scores {'-'.join(spec.types)} pairs, which "
            f"type_pairs {list(config.type_pairs)} excludes; add {'-'.join(spec.types)}"
        )
    return spec


def relation_threshold(config: KGConfig, spec: RelationSpec | None) -> float | None:
    """The export threshold: the configured one, else the bundle's dev-chosen one (calibrated
    through the pipeline where the card has that, else on gold mentions)."""
    if spec is None:
        return None
    return config.min_relation_score if config.min_relation_score is not None else spec.threshold


class DocumentGraphWorker:
    """`map_batches` callable: documents in, partial graph tables per partition out."""

    def __init__(
        self,
        *,
        linker: Any,
        entities: Any,
        owners: Any,
        id_column: str,
        text_column: str,
        levels: list[str],
        allowed_pairs: frozenset[tuple[str, str]] | None,
        examples: int,
        min_score: float,
        label_map: dict[str, str],
        relations: str | None = None,
        relation_threads: int | None = None,
    ) -> None:
        import ray

        def fetch(value: Any) -> Any:
            return ray.get(value) if isinstance(value, ray.ObjectRef) else value

        self.linker: Linker = fetch(linker)
        owners, entities = fetch(owners), fetch(entities)
        self.owner = dict(
            zip(
                owners.column("doc_id").to_pylist(),
                owners.column("partition").to_pylist(),
                strict=True,
            )
        )
        entities = entities.filter(pc.greater_equal(entities.column("score"), min_score))
        entities = entities.sort_by([("doc_id", "ascending"), ("start", "ascending")])
        self.rows: dict[str, range] = {}
        ids = entities.column("doc_id").to_pylist()
        for index, doc_id in enumerate(ids):
            known = self.rows.get(doc_id)
            self.rows[doc_id] = range(known.start if known else index, index + 1)
        self.entities = {
            c: entities.column(c).to_pylist() for c in ("start", "end", "text", "label")
        }
        self.id_column, self.text_column = id_column, text_column
        self.levels, self.allowed_pairs, self.examples = levels, allowed_pairs, examples
        self.label_map = label_map
        self.scorer = (
            RelationScorer(relations, threads=relation_threads) if relations is not None else None
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = pc.cast(batch.column(self.id_column), pa.string()).to_pylist()
        texts = batch.column(self.text_column).to_pylist()
        documents, queries = [], []
        starts, ends = self.entities["start"], self.entities["end"]
        surfaces, labels = self.entities["text"], self.entities["label"]
        for doc_id, value in zip(ids, texts, strict=True):
            partition, text = self.owner.get(doc_id), _text(value)
            if partition is None or text is None:
                continue  # not to merge, or no text: reported as missing by the driver
            sentences = sentence_spans(text)
            rows = self.rows.get(doc_id, range(0))
            defined = abbreviation_map(find_abbreviations(text, sentences)) if rows else {}
            for row in rows:
                kind = entity_type(labels[row], self.label_map)
                queries.append((surfaces[row], kind, defined.get(surfaces[row].strip())))
            documents.append((partition, doc_id, text, sentences, rows))
        links = iter(self.linker.link_many(queries))
        counters: dict[str, CooccurrenceCounter] = {}
        linked = []
        for partition, doc_id, text, sentences, rows in documents:
            mentions = []
            for row in rows:
                link = next(links)
                kind = entity_type(labels[row], self.label_map)
                mentions.append(
                    Mention(starts[row], ends[row], surfaces[row], link.id, kind, link.tier)
                )
            counter = counters.get(partition)
            if counter is None:
                counter = counters[partition] = CooccurrenceCounter(
                    self.levels, self.allowed_pairs, self.examples
                )
            counter.add_document(doc_id, sentences, mentions)
            linked.append((doc_id, text, sentences, mentions))
        if self.scorer is not None and linked:
            scored = self.scorer.score(linked)
            for (partition, *_), rows in zip(documents, scored, strict=True):
                counters[partition].add_relations(rows)
        rows_out: dict[str, list] = {"partition": [], **{n: [] for n in PARTIAL_TABLES}}
        for partition, counter in counters.items():
            rows_out["partition"].append(partition)
            for name, table in counter.tables().items():
                rows_out[name].append(_to_ipc(table))
        return pa.table(
            rows_out,
            schema=pa.schema(
                [("partition", pa.string()), *[(n, pa.binary()) for n in PARTIAL_TABLES]]
            ),
        )


def _assign_documents(
    fs, partitions: dict, work: list[str], taken: pa.Array
) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """(owners: doc_id -> partition, their entities, skipped duplicates per partition)."""
    owners, entities, skipped = [], [], {}
    for name in work:
        partition = partitions[name]
        partition_entities = read_entities(fs, partition)
        ids = read_document_ids(fs, partition, partition_entities)
        fresh = ids.filter(pc.invert(pc.is_in(ids, value_set=taken)))
        skipped[name] = len(ids) - len(fresh)
        taken = pa.concat_arrays([taken, fresh])
        owners.append(
            pa.table({"doc_id": fresh, "partition": pa.array([name] * len(fresh), pa.string())})
        )
        keep = pc.is_in(partition_entities.column("doc_id"), value_set=fresh)
        entities.append(partition_entities.filter(keep))
    owner_schema = pa.schema([("doc_id", pa.string()), ("partition", pa.string())])
    owner_table = pa.concat_tables([owner_schema.empty_table(), *owners])
    return owner_table, pa.concat_tables(entities) if entities else None, skipped


def derive_contributions(
    config: KGConfig,
    linker: Linker,
    owners: pa.Table,
    entities: pa.Table,
    address: str | None = None,
    relations: RelationSpec | None = None,
) -> dict[str, GraphTables]:
    """Run the Ray Data stage; one contribution (table set) per owning partition."""
    import ray
    from ray.data import ActorPoolStrategy

    corpus = inspect_corpus(config.documents, config.id_column, config.text_column)
    wanted = set(owners.column("doc_id").to_pylist())
    duplicated = [d for d in corpus.duplicate_ids if d in wanted]
    if duplicated:
        raise OpenMedError(
            f"{config.documents}: {len(duplicated)} document(s) to merge have several texts "
            f"(doc_id {duplicated[0]!r} appears {corpus.duplicate_ids[duplicated[0]]} times); "
            "each document needs exactly one"
        )
    fs, _ = resolve(config.documents)
    ids = pads.dataset(corpus.files, filesystem=fs, format="parquet").to_table(
        columns=[config.id_column]
    )
    _require_texts(owners, ids.column(0), config.documents, "have no row")
    ensure_ray(address)
    remote_args = ray_remote_env(config.documents, config.entities)
    dataset = read_parquet_dataset(
        corpus.files, fs, [config.id_column, config.text_column], remote_args
    )
    partials = dataset.map_batches(
        DocumentGraphWorker,
        fn_constructor_kwargs={
            "linker": ray.put(linker),
            "entities": ray.put(entities),
            "owners": ray.put(owners),
            "id_column": config.id_column,
            "text_column": config.text_column,
            "levels": list(config.levels),
            "allowed_pairs": config.allowed_type_pairs,
            "examples": config.examples,
            "min_score": config.min_score,
            "label_map": config.linker.label_map,
            "relations": relations.path if relations is not None else None,
            "relation_threads": config.relation_threads or max(1, round(config.cpus_per_actor)),
        },
        compute=ActorPoolStrategy(size=config.actors),
        num_cpus=config.cpus_per_actor,
        batch_size=config.docs_per_batch,
        batch_format="pyarrow",
        **remote_args,
    )
    pending: dict[str, list[GraphTables]] = {}
    for batch in partials.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in batch.to_pylist():
            parts = pending.setdefault(row["partition"], [])
            parts.append({n: _from_ipc(row[n]) for n in PARTIAL_TABLES})
            if len(parts) >= MERGE_EVERY:
                pending[row["partition"]] = [_sum(parts, config.examples)]
    return {name: _sum(parts, config.examples) for name, parts in pending.items()}


def _sum(parts: Iterable[GraphTables], examples: int) -> GraphTables:
    return add_tables([(p, 1) for p in parts], examples)


def _require_texts(owners: pa.Table, available, documents: str, problem: str) -> None:
    """Fail unless every document to merge is among `available` ids."""
    available = pc.cast(available, pa.string())
    if isinstance(available, pa.ChunkedArray):
        available = available.combine_chunks()
    missing = owners.filter(pc.invert(pc.is_in(owners.column("doc_id"), value_set=available)))
    if missing.num_rows:
        example = missing.slice(0, 3).to_pylist()
        raise MissingTextError(
            f"{missing.num_rows} document(s) to merge {problem} in {documents} (e.g. "
            f"{example}); point --documents at the corpus that was annotated"
        )


def _examples_after_replace(
    merged_edges: pa.Table,
    removed: list[GraphTables],
    active: list[GraphTables],
    k: int,
) -> pa.Table:
    """Examples of the edges a replaced contribution touched, from the active ones."""
    keys = KEYS["edges"]
    touched = pa.concat_tables([r["edges"].select(keys) for r in removed])
    touched = touched.group_by(keys, use_threads=False).aggregate([])
    candidates = []
    for contribution in active:
        edges = contribution["edges"]
        candidates.append(edges.filter(pa.array(match_rows(edges, touched, keys) >= 0)))
    return with_examples(merged_edges, smallest_examples(candidates, k))


def _merge(
    store: GraphStore,
    old_tables: GraphTables,
    new_contributions: list[GraphTables],
    merged: dict[str, dict],
    records: dict[str, dict],
    plan: MergePlan,
    config: KGConfig,
) -> GraphTables:
    """Previous totals + new contributions - the old contributions of replaced partitions."""
    removed = [
        store.read_contribution(merged[name]["contribution"], TABLES) for name in plan.replaced
    ]
    tables = add_tables(
        [(old_tables, 1), *[(c, 1) for c in new_contributions], *[(r, -1) for r in removed]],
        config.examples,
    )
    if removed:
        active = [
            store.read_contribution(record["contribution"], ["edges"])
            for name, record in records.items()
            if name not in plan.work
        ] + new_contributions
        tables["edges"] = _examples_after_replace(tables["edges"], removed, active, config.examples)
    return tables


def build_graph(config: KGConfig, address: str | None = None) -> dict[str, Any]:
    """Merge ENTITIES_DIR's new partitions into GRAPH_DIR; returns the run summary.

    The run claims GRAPH_DIR first (one writer per graph, see openmed_ray/io/claim.py), so two
    runs never merge the same partition. A claim whose owner is gone is taken over without
    a flag: a dead run left CURRENT on the previous state, and this run redoes its merge.
    Ray (`address`, see `ensure_ray`) is joined only when there is something to derive."""
    started = time.perf_counter()
    store = GraphStore(config.graph)
    linker = build_linker(config.linker)  # bad dictionaries and inputs fail before the claim
    relations = check_relations(config)
    fs, discovered = discover_partitions(config.entities)
    run_id = f"{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    with acquire_claim(
        str(store.root), run_id, purpose="kg", takeover=True, config=config.claim
    ) as claim:
        return _build_graph(
            config, store, claim, linker, relations, fs, discovered, started, address
        )


def _build_graph(
    config: KGConfig,
    store: GraphStore,
    claim: Claim,
    linker: Linker,
    relations: RelationSpec | None,
    fs,
    discovered: list,
    started: float,
    address: str | None,
) -> dict[str, Any]:
    run_id = claim.owner.run_id
    pointer = store.pointer()
    state = store.current()
    manifest = state.manifest if state else None
    settings = graph_settings(config, linker, relations)
    partitions = {p.name: p for p in discovered}
    merged = (manifest or {}).get("partitions", {})
    known = {path: record for p in merged.values() for path, record in p["files"].items()}
    hashed = {p.name: content_hash(fs, p, known) for p in discovered}
    plan = plan_merge(
        manifest,
        {name: digest for name, (digest, _) in hashed.items()},
        settings,
        config.replace,
        config.rebuild,
    )
    min_relation_score = relation_threshold(config, relations)
    export_settings: dict[str, Any] = {"min_count": config.min_count}
    if relations is not None:
        export_settings["min_relation_score"] = min_relation_score
    if state is not None and not plan.work and manifest.get("export") == export_settings:
        log.info("graph %s is up to date (version %d)", store.root, state.version)
        summary = json.loads((state.path / "summary.json").read_text())
        return {**summary, "up_to_date": True}

    old_tables, old_documents = store.read_state(state)
    kept_documents = old_documents.filter(
        pc.invert(pc.is_in(old_documents.column("partition"), pa.array(plan.replaced, pa.string())))
    )
    owners, entities, skipped = _assign_documents(
        fs, partitions, plan.work, kept_documents.column("doc_id").combine_chunks()
    )
    log.info(
        "kg run %s: %d partition(s) to merge (%d new, %d replaced), %d documents",
        run_id,
        len(plan.work),
        len(plan.new),
        len(plan.replaced),
        owners.num_rows,
    )
    if relations is not None and entities is not None:
        labels = pc.unique(entities.column("label")).to_pylist()
        kinds = [entity_type(label, config.linker.label_map) for label in labels]
        check_entity_types(relations, kinds, config.entities)
    contributions = (
        derive_contributions(config, linker, owners, entities, address, relations)
        if owners.num_rows
        else {}
    )
    seen = [c["documents"].column("doc_id") for c in contributions.values()]
    _require_texts(
        owners, pa.chunked_array(seen, pa.string()), config.documents, "have no usable text"
    )

    partition_records = {n: r for n, r in merged.items() if n not in plan.replaced}
    empty = _sum([], config.examples)
    new_contributions = []
    documents = [kept_documents]
    for index, name in enumerate(plan.work):
        contribution = contributions.get(name, empty)
        new_contributions.append(contribution)
        relative = store.write_contribution(run_id, index, contribution)
        docs = contribution["documents"]
        documents.append(
            pa.table(
                {
                    "doc_id": docs.column("doc_id"),
                    "partition": pa.array([name] * docs.num_rows, pa.string()),
                    "n_sentences": docs.column("n_sentences"),
                }
            )
        )
        partition_records[name] = {
            "hash": hashed[name][0],
            "contribution": relative,
            "documents": docs.num_rows,
            "sentences": int(pc.sum(docs.column("n_sentences")).as_py() or 0),
            "duplicates_skipped": skipped.get(name, 0),
            "run": run_id,
        }
    for name, record in partition_records.items():
        if name in hashed:
            record["files"] = hashed[name][1]
    fault_point("contributions-written")

    tables = _merge(store, old_tables, new_contributions, merged, partition_records, plan, config)
    all_documents = (
        pa.concat_tables(documents).cast(STATE_DOCUMENT_SCHEMA).sort_by([("doc_id", "ascending")])
    )
    n_documents = all_documents.num_rows
    n_sentences = int(pc.sum(all_documents.column("n_sentences")).as_py() or 0)
    nodes, edges = finalize(tables, n_documents, n_sentences, min_relation_score)
    history = [*(manifest or {}).get("history", [])][-49:]
    history.append(
        {
            "run": run_id,
            "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "new": plan.new,
            "replaced": plan.replaced,
        }
    )
    new_manifest = {
        "settings": settings,
        "export": export_settings,
        "dictionary": {"version": linker.version, "entries": linker.size},
        "totals": {"documents": n_documents, "sentences": n_sentences},
        "partitions": dict(sorted(partition_records.items())),
        "history": history,
    }

    def exports(state_dir: Path) -> None:
        scored = (
            (relations.types, exported_relations(tables["relations"], min_relation_score))
            if relations is not None
            else None
        )
        export_dir = write_exports(state_dir, nodes, edges, config.min_count, scored)
        summary = _summary(config, run_id, plan, new_manifest, nodes, edges, tables, skipped)
        if relations is not None:
            summary["relations"] = _relation_summary(relations, tables, min_relation_score)
        summary["version"] = int(state_dir.name[1:])
        summary["state"] = str(state_dir)
        summary["export"] = str(export_dir)
        summary["seconds"] = round(time.perf_counter() - started, 2)
        (state_dir / "summary.json").write_text(json.dumps(summary, indent=2))

    committed = store.commit(
        tables,
        all_documents,
        new_manifest,
        exports,
        pointer,
        keep_states=config.keep_states,
        fence=claim.fence,
    )
    return {**json.loads((committed.path / "summary.json").read_text()), "up_to_date": False}


def _summary(config, run_id, plan, manifest, nodes, edges, tables, skipped) -> dict[str, Any]:
    tiers = dict(
        zip(*[tables["tiers"].column(c).to_pylist() for c in ("tier", "count")], strict=True)
    )
    mentions = sum(tiers.values())
    labels = nodes.column("label").to_pylist()
    levels = edges.column("level").to_pylist()
    exported = pc.sum(pc.greater_equal(edges.column("pair_count"), config.min_count)).as_py() or 0
    return {
        "graph": str(Path(config.graph).resolve()),
        "run": run_id,
        "partitions": {
            "merged": len(manifest["partitions"]),
            "new": plan.new,
            "replaced": plan.replaced,
            "unchanged": len(plan.unchanged),
            "missing_from_input": plan.missing,
        },
        "duplicate_documents_skipped": sum(skipped.values()),
        "documents": manifest["totals"]["documents"],
        "sentences": manifest["totals"]["sentences"],
        "mentions": mentions,
        "linking": {
            "tiers": tiers,
            "linked_share": round(1 - tiers.get("local", 0) / mentions, 4) if mentions else None,
        },
        "nodes": len(labels),
        "nodes_by_type": {label: labels.count(label) for label in sorted(set(labels))},
        "edges": {level: levels.count(level) for level in sorted(set(levels))},
        "exported_edges": int(exported),
        "min_count": config.min_count,
        "dictionary": manifest["dictionary"],
        "settings": manifest["settings"],
    }


def _relation_summary(
    spec: RelationSpec, tables: GraphTables, min_score: float | None
) -> dict[str, Any]:
    relations = tables["relations"]
    scores = relations.column("score")
    passing = relations.filter(pc.greater_equal(scores, min_score))
    return {
        "bundle": spec.name,
        "version": spec.version,
        "relation_types": list(spec.task.relations),
        "min_score": min_score,
        "bundle_threshold": {"value": spec.threshold, "chosen_on": spec.threshold_source},
        "scored_pairs": relations.num_rows,
        "documents_with_pairs": len(pc.unique(relations.column("doc_id"))),
        "pairs_at_or_above_min_score": passing.num_rows,
        "documents_with_relations": len(pc.unique(passing.column("doc_id"))),
    }


def format_summary(summary: dict[str, Any]) -> str:
    if summary.get("up_to_date"):
        return f"graph version {summary['version']} is up to date: nothing new to merge ({summary['state']})"
    partitions = summary["partitions"]
    linked = summary["linking"]["linked_share"]
    relations = summary.get("relations")
    scored = (
        f"; {relations['bundle']} scored {relations['scored_pairs']} candidate pairs in "
        f"{relations['documents_with_pairs']} documents, {relations['pairs_at_or_above_min_score']}"
        f" at or above {relations['min_score']}"
        if relations
        else ""
    )
    return (
        f"graph version {summary['version']}: merged {len(partitions['new'])} new and "
        f"{len(partitions['replaced'])} replaced partition(s) ({partitions['merged']} in total); "
        f"{summary['documents']} documents, {summary['nodes']} nodes, edges {summary['edges']}"
        f" ({summary['exported_edges']} exported), linked {linked if linked is not None else '-'}"
        f" of {summary['mentions']} mentions{scored}; exports in {summary['export']}"
    )
