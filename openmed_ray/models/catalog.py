"""The adapter catalog: names to bundle directories.

Lookup order for a name: user catalogs (JSON files named by $OPENMED_RAY_CATALOG, separated
by os.pathsep, each mapping name -> bundle path; written by `openmed-ray select`), then the
bundles shipped inside the package (openmed_ray/adapters/<name>/). Anything else is taken
as a path: a bundle directory, or a fine-tuning run directory holding `adapter/`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from openmed_ray.errors import OpenMedError
from openmed_ray.models.bundle import is_bundle, read_card

CATALOG_ENV = "OPENMED_RAY_CATALOG"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "adapters"
# One encoder pass, four entity types; each head within 1 pp of its single adapter on test.
DEFAULT_ADAPTERS = ("all-types",)
# Catalog name -> the benchmark(s) it is trained on (species: whichever scores better).
ADAPTER_DATASETS: dict[str, tuple[str, ...]] = {
    "chemical": ("BC5CDR-chem",),
    "disease": ("BC5CDR-disease",),
    "ncbi-disease": ("NCBI-disease",),
    "gene": ("BC2GM",),
    "species": ("linnaeus", "s800"),
    # The multi-type bundle: its datasets trained together (a multi-task run's dataset name).
    "all-types": ("BC5CDR-chem+BC5CDR-disease+BC2GM+linnaeus",),
}


def adapter_name_for(dataset: str) -> str:
    """The catalog name an adapter trained on `dataset` is registered under."""
    for name, datasets in ADAPTER_DATASETS.items():
        if dataset in datasets:
            return name
    return dataset.lower()


class UnknownAdapterError(OpenMedError):
    """An adapter name that is in no catalog and is not a bundle path."""


def user_catalogs() -> list[Path]:
    raw = os.environ.get(CATALOG_ENV, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p]


def _read_catalog(path: Path) -> dict[str, Path]:
    if not path.is_file():
        return {}
    entries = json.loads(path.read_text())
    return {name: (path.parent / entry["path"]).resolve() for name, entry in entries.items()}


def catalog_entries() -> dict[str, Path]:
    """Every named adapter: shipped ones, overridden by user catalogs."""
    entries: dict[str, Path] = {}
    if SHIPPED_DIR.is_dir():
        entries.update({p.name: p for p in sorted(SHIPPED_DIR.iterdir()) if is_bundle(p)})
    for catalog in user_catalogs():
        entries.update(_read_catalog(catalog))
    return entries


def resolve_adapter(name_or_path: str | Path) -> Path:
    """The bundle directory for a catalog name or a path."""
    entries = catalog_entries()
    if str(name_or_path) in entries:
        return entries[str(name_or_path)]
    path = Path(name_or_path).expanduser()
    if is_bundle(path):
        return path.resolve()
    if is_bundle(path / "adapter"):
        return (path / "adapter").resolve()
    known = ", ".join(sorted(entries)) or "none"
    raise UnknownAdapterError(
        f"unknown adapter {str(name_or_path)!r}: not a catalog name (known: {known}) and not a "
        "bundle directory (one with head.safetensors and labels.json)"
    )


def list_adapters() -> list[dict[str, Any]]:
    """Name, dataset, method and test F1 of every catalog adapter."""
    rows = []
    for name, path in sorted(catalog_entries().items()):
        card = read_card(path)
        test = card.get("metrics", {}).get("test", {})
        relation = card.get("relation_task") if card.get("task") == "relation" else None
        types = (
            [relation["head_type"], relation["tail_type"]]
            if relation
            else card.get("entity_types", [])
        )
        rows.append(
            {
                "name": name,
                "task": card.get("task") or "ner",
                "relations": relation["relations"] if relation else [],
                "path": str(path),
                "dataset": card.get("dataset"),
                "backbone": card.get("backbone"),
                "method": card.get("method_label", card.get("method")),
                "entity_types": types,
                "types": (
                    f"{' -> '.join(types)} ({', '.join(relation['relations'])})"
                    if relation
                    else ", ".join(types)
                ),
                "heads": [head["name"] for head in card.get("heads", [])],
                "test_f1": test.get("f1"),
                "test_precision": test.get("precision"),
                "test_recall": test.get("recall"),
                "version": card.get("version"),
                "shipped": path.parent == SHIPPED_DIR,
            }
        )
    return rows


def register_adapter(catalog: str | Path, name: str, bundle: str | Path) -> None:
    """Add or replace `name` in a user catalog file (atomically)."""
    catalog = Path(catalog)
    entries = json.loads(catalog.read_text()) if catalog.is_file() else {}
    entries[name] = {"path": os.path.relpath(Path(bundle).resolve(), catalog.parent.resolve())}
    catalog.parent.mkdir(parents=True, exist_ok=True)
    temporary = catalog.with_name(f".{catalog.name}.tmp")
    temporary.write_text(json.dumps(entries, indent=2, sort_keys=True))
    temporary.replace(catalog)
