"""What every benchmark shares: where results go and how they are written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(
    payload: dict, json_path: Path, name: str, chart: Callable[[Path], None] | None = None
) -> None:
    """JSON to `json_path` and to results/NAME.json (the committed copy), then the chart
    to results/NAME.png, and the JSON on stdout."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2)
    for path in {json_path.resolve(), (RESULTS / f"{name}.json").resolve()}:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if chart is not None:
        chart(RESULTS / f"{name}.png")
    print(text)
