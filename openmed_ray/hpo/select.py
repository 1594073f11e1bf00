"""Best of breed: the best adapter per dataset across sweeps and backbones, by dev F1 only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openmed_ray.errors import OpenMedError
from openmed_ray.hpo.sweep import SWEEP_FILE
from openmed_ray.io.filesystem import write_bytes_atomic
from openmed_ray.models.catalog import adapter_name_for, register_adapter


def read_sweep(directory: str | Path) -> dict[str, Any]:
    path = Path(directory).expanduser()
    path = path if path.name == SWEEP_FILE else path / SWEEP_FILE
    if not path.is_file():
        raise OpenMedError(f"{path} not found: pass the --output directory of a finished sweep")
    try:
        summary = json.loads(path.read_text())
        final = summary["final"]
        return {
            "sweep": str(path.parent),
            "dataset": summary["dataset"],
            "backbone": summary["backbone"],
            "method": summary["method"],
            "dev_f1": final["dev"]["f1"],
            "test_f1": final["test"]["f1"],
            "bundle": final["bundle"],
        }
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise OpenMedError(f"{path}: not a finished sweep report ({exc!r})") from None


def select_adapters(sweeps: list[str | Path], catalog: str | Path) -> list[dict[str, Any]]:
    """Register the best final adapter per dataset (by dev F1) in the catalog file `catalog`.

    Returns one row per dataset with the winner and every candidate's dev F1; also written
    next to the catalog as selection.json."""
    if not sweeps:
        raise OpenMedError("select needs at least one sweep directory")
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for sweep in sweeps:
        candidate = read_sweep(sweep)
        if not Path(candidate["bundle"]).is_dir():
            raise OpenMedError(
                f"{candidate['sweep']}: its final bundle {candidate['bundle']} is gone"
            )
        by_dataset.setdefault(candidate["dataset"], []).append(candidate)
    rows = []
    for dataset, candidates in sorted(by_dataset.items()):
        winner = max(candidates, key=lambda c: c["dev_f1"])
        name = adapter_name_for(dataset)
        register_adapter(catalog, name, winner["bundle"])
        rows.append({"name": name, "dataset": dataset, "chosen": winner, "candidates": candidates})
    selection = Path(catalog).expanduser().resolve().with_name("selection.json")
    write_bytes_atomic(json.dumps(rows, indent=2).encode(), selection)
    return rows
