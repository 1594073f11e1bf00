"""The graph directory: versioned states, per-partition contributions, an atomic pointer.

    GRAPH_DIR/CURRENT                    "states/v000007": the state readers use
    GRAPH_DIR/latest -> states/v000007   convenience symlink, follows CURRENT
    GRAPH_DIR/states/v000007/
        nodes, surfaces, edges, tiers, documents .parquet    additive totals (graph.py)
        export/                          nodes.parquet, edges.parquet, graph.graphml, neo4j/
        summary.json
        manifest.json                    written last: settings, partitions (content hash,
                                         file records, contribution), totals, history
    GRAPH_DIR/contributions/RUN/K/       one merged partition's own tables, kept so that
                                         replacing it subtracts exactly what it added

A run writes its contributions and a complete new state directory, then replaces CURRENT
atomically (a rename). A crash at any point before that leaves CURRENT on the previous
state, intact and readable; leftovers of the failed run are removed by the next commit.
Two runs never work on one directory at once: a run claims it first (GRAPH_DIR/_claim,
openmed_ray/io/claim.py) and checks the claim again before the switch; the pointer must
also still be the one the run started from.

Test hook: with OPENMED_RAY_KG_FAULT set to one of FAULT_POINTS, the run raises
`InjectedFault` at that point (a real exception in the real code path).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from openmed_ray.errors import ConfigError, OpenMedError
from openmed_ray.io.claim import ClaimFence, ClaimLostError
from openmed_ray.io.filesystem import is_remote, write_bytes_atomic
from openmed_ray.kg.graph import SCHEMAS, GraphTables

POINTER = "CURRENT"
LATEST = "latest"
STATES = "states"
CONTRIBUTIONS = "contributions"
MANIFEST = "manifest.json"
FORMAT = 1
FAULT_ENV = "OPENMED_RAY_KG_FAULT"
FAULT_POINTS = ("contributions-written", "state-partly-written", "before-switch")
STATE_DOCUMENT_SCHEMA = pa.schema(
    [("doc_id", pa.string()), ("partition", pa.string()), ("n_sentences", pa.int64())]
)
TABLES = ("nodes", "surfaces", "edges", "tiers", "relations")


class InjectedFault(RuntimeError):
    """Raised at a fault point named by OPENMED_RAY_KG_FAULT (tests only)."""


class PartitionChangedError(OpenMedError):
    """A merged partition's content changed and was not named in --replace."""


class GraphSettingsError(OpenMedError):
    """The run's graph settings differ from those the graph was built with."""


class ConcurrentRunError(OpenMedError):
    """Another run committed to the graph directory while this one was working."""


def fault_point(name: str) -> None:
    if os.environ.get(FAULT_ENV) == name:
        raise InjectedFault(f"injected fault at {name!r} ({FAULT_ENV})")


@dataclass
class State:
    path: Path
    manifest: dict[str, Any]

    @property
    def version(self) -> int:
        return int(self.manifest["version"])


@dataclass
class MergePlan:
    """What a run does with each discovered partition."""

    new: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # merged, no longer in the input

    @property
    def work(self) -> list[str]:
        """Partitions to derive, in merge order: replacements first, then new ones."""
        return [*self.replaced, *self.new]


def plan_merge(
    manifest: dict[str, Any] | None,
    hashes: dict[str, str],
    settings: dict[str, Any],
    replace: Sequence[str] = (),
    rebuild: bool = False,
) -> MergePlan:
    """Classify partitions (name -> content hash, sorted by name) against the manifest.

    A merged partition whose hash changed is refused unless `replace` names it; `rebuild`
    re-derives every merged partition (needed when the graph settings or dictionary change).
    """
    merged = (manifest or {}).get("partitions", {})
    plan = MergePlan(missing=sorted(set(merged) - set(hashes)))
    unknown = sorted(set(replace) - set(merged))
    if unknown:
        raise OpenMedError(
            f"--replace {unknown[0]}: no merged partition has that name; merged partitions "
            f"are {sorted(merged)[:10]}"
        )
    gone = sorted(set(replace) & set(plan.missing))
    if gone:
        raise OpenMedError(f"--replace {gone[0]}: that partition is no longer in the input")
    if rebuild and plan.missing:
        raise OpenMedError(
            f"--rebuild needs every merged partition in the input, but {plan.missing[:5]} "
            f"({len(plan.missing)}) are gone; build a new graph directory instead"
        )
    if manifest and manifest["settings"] != settings and not rebuild:
        changed = sorted(
            key
            for key in set(settings) | set(manifest["settings"])
            if settings.get(key) != manifest["settings"].get(key)
        )
        raise GraphSettingsError(
            f"the graph in this directory was built with other settings ({', '.join(changed)} "
            "differ, e.g. a new dictionary version); pass --rebuild to re-derive every merged "
            "partition with the new settings, or use a new --graph directory"
        )
    changed = []
    for name, digest in hashes.items():
        if name not in merged:
            plan.new.append(name)
        elif rebuild or (name in replace and merged[name]["hash"] != digest):
            plan.replaced.append(name)
        elif merged[name]["hash"] != digest:
            changed.append(name)
        else:
            plan.unchanged.append(name)
    if changed:
        raise PartitionChangedError(
            f"merged partition(s) {changed[:5]} changed since they were merged (content hash "
            f"{merged[changed[0]]['hash'][:12]} -> {hashes[changed[0]][:12]}); pass "
            f"--replace {changed[0]} to substitute the new content, or restore the old files"
        )
    return plan


def _write_tables(directory: Path, tables: dict[str, pa.Table], between: str | None = None):
    directory.mkdir(parents=True, exist_ok=True)
    for index, (name, table) in enumerate(tables.items()):
        pq.write_table(table, directory / f"{name}.parquet")
        if index == 0 and between:
            fault_point(between)


def _read_tables(directory: Path, names: Sequence[str]) -> dict[str, pa.Table]:
    tables = {}
    for name in names:
        path = directory / f"{name}.parquet"
        # States and contributions written before relation scoring have no relations table.
        if name == "relations" and not path.is_file():
            tables[name] = SCHEMAS[name].empty_table()
        else:
            tables[name] = pq.read_table(path)
    return tables


class GraphStore:
    """One local graph directory."""

    def __init__(self, root: str | Path) -> None:
        if is_remote(root):
            raise ConfigError(f"graph: {root} must be a local directory (or mounted volume)")
        self.root = Path(root).expanduser().resolve()

    def pointer(self) -> str | None:
        try:
            return (self.root / POINTER).read_text().strip() or None
        except FileNotFoundError:
            return None

    def current(self) -> State | None:
        pointer = self.pointer()
        if pointer is None:
            return None
        path = self.root / pointer
        return State(path, json.loads((path / MANIFEST).read_text()))

    def read_state(self, state: State | None) -> tuple[GraphTables, pa.Table]:
        """The merged totals and the documents table (doc_id, partition, n_sentences)."""
        if state is None:
            return {
                n: SCHEMAS[n].empty_table() for n in TABLES
            }, STATE_DOCUMENT_SCHEMA.empty_table()
        tables = _read_tables(state.path, [*TABLES, "documents"])
        return {n: tables[n] for n in TABLES}, tables["documents"]

    def write_contribution(self, run_id: str, index: int, tables: GraphTables) -> str:
        relative = f"{CONTRIBUTIONS}/{run_id}/{index:05d}"
        _write_tables(self.root / relative, tables)
        return relative

    def read_contribution(self, relative: str, names: Sequence[str] | None = None) -> GraphTables:
        return _read_tables(self.root / relative, names or [*TABLES, "documents"])

    def _next_version(self) -> int:
        versions = [0]
        if (self.root / STATES).is_dir():
            versions += [
                int(p.name[1:]) for p in (self.root / STATES).iterdir() if p.name[1:].isdigit()
            ]
        return max(versions) + 1

    def commit(
        self,
        tables: GraphTables,
        documents: pa.Table,
        manifest: dict[str, Any],
        write_exports: Callable[[Path], None],
        expected_pointer: str | None,
        keep_states: int = 2,
        fence: ClaimFence | None = None,
    ) -> State:
        """Write a complete new state, then switch CURRENT to it atomically, provided this
        run still owns the directory (`fence`) and CURRENT is still where it started."""
        version = self._next_version()
        relative = f"{STATES}/v{version:06d}"
        path = self.root / relative
        manifest = {**manifest, "format": FORMAT, "version": version, "previous": expected_pointer}
        _write_tables(
            path,
            {**{n: tables[n] for n in TABLES}, "documents": documents},
            between="state-partly-written",
        )
        write_exports(path)
        write_bytes_atomic(json.dumps(manifest, indent=2).encode(), path / MANIFEST)
        fault_point("before-switch")
        try:
            if fence is not None:
                fence.verify()
            if self.pointer() != expected_pointer:
                raise ConcurrentRunError(
                    f"{self.root} was updated by another run while this one worked (now "
                    f"{self.pointer()}); nothing was changed by this run: run it again"
                )
        except (ClaimLostError, ConcurrentRunError):
            shutil.rmtree(path, ignore_errors=True)
            raise
        write_bytes_atomic(f"{relative}\n".encode(), self.root / POINTER)
        self._point_latest(relative)
        self._cleanup(keep_states)
        return State(path, manifest)

    def _point_latest(self, relative: str) -> None:
        """Refresh the `latest` symlink (a convenience; CURRENT is the truth)."""
        temporary = self.root / f".{LATEST}.{os.getpid()}"
        try:
            if temporary.is_symlink():
                temporary.unlink()
            temporary.symlink_to(relative, target_is_directory=True)
            os.replace(temporary, self.root / LATEST)
        except OSError:
            pass

    def _cleanup(self, keep_states: int) -> None:
        """Keep the current state and its predecessors (`keep_states` in all); remove other
        states (failed runs' included) and contributions no kept state refers to."""
        kept: list[Path] = []
        pointer = self.pointer()
        while pointer and len(kept) < keep_states and (self.root / pointer / MANIFEST).is_file():
            kept.append(self.root / pointer)
            pointer = json.loads((self.root / pointer / MANIFEST).read_text()).get("previous")
        for path in (self.root / STATES).iterdir():
            if path not in kept:
                shutil.rmtree(path, ignore_errors=True)
        referenced = set()
        for path in kept:
            manifest = json.loads((path / MANIFEST).read_text())
            referenced |= {p["contribution"] for p in manifest["partitions"].values()}
        root = self.root / CONTRIBUTIONS
        if not root.is_dir():
            return
        for run in root.iterdir():
            for part in list(run.iterdir()) if run.is_dir() else []:
                if f"{CONTRIBUTIONS}/{run.name}/{part.name}" not in referenced:
                    shutil.rmtree(part, ignore_errors=True)
            if run.is_dir() and not any(run.iterdir()):
                run.rmdir()


def _export_dir(root: str | Path) -> Path:
    state = GraphStore(root).current()
    if state is None:
        raise OpenMedError(f"{root} holds no graph yet (no {POINTER} file)")
    return state.path / "export"


def load_graph(root: str | Path) -> tuple[pa.Table, pa.Table]:
    """The current graph's exported (nodes, edges) tables."""
    export = _export_dir(root)
    return pq.read_table(export / "nodes.parquet"), pq.read_table(export / "edges.parquet")


def load_relations(root: str | Path) -> pa.Table:
    """The current graph's exported per-document relations (built with --relations)."""
    path = _export_dir(root) / "relations.parquet"
    if not path.is_file():
        raise OpenMedError(
            f"{root}: the current graph has no relations; build it with `kg --relations BUNDLE`"
        )
    return pq.read_table(path)
