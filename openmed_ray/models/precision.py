"""The inference precision of an adapter: `auto` picks the fastest one that keeps F1.

`auto` is bfloat16 on a GPU. On a CPU it is int8 (dynamic, per channel) when the adapter's
card records an int8 measurement that loses at most `AUTO_INT8_MAX_LOSS_PP` of test F1
against FP32 on every head, else FP32: a precision is never lowered on faith.
`record_precision_check` makes that measurement and writes it into the card.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmed_ray.errors import OpenMedError

AUTO = "auto"
AUTO_INT8_MAX_LOSS_PP = 0.3
CHECK_FIELD = "precision_check"


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    reason: str


def choose_precision(
    card: dict[str, Any], device: str = "cpu", runtime: str = "torch"
) -> PrecisionChoice:
    """What `auto` means for an adapter with this card on this device and runtime."""
    if device.startswith("cuda"):
        if runtime == "onnx":
            return PrecisionChoice("fp32", "GPU with the onnx runtime, which has no bf16 here")
        return PrecisionChoice("bf16", "GPU: bfloat16")
    check = card.get(CHECK_FIELD)
    if not check:
        return PrecisionChoice("fp32", "CPU: the card records no int8 F1 measurement")
    loss = -min(head["int8_delta_pp"] for head in check["heads"].values())
    if loss <= AUTO_INT8_MAX_LOSS_PP:
        return PrecisionChoice(
            "int8",
            f"CPU: int8 loses {loss:.2f} pp of test F1 (at most {AUTO_INT8_MAX_LOSS_PP} pp)",
        )
    return PrecisionChoice(
        "fp32", f"CPU: int8 loses {loss:.2f} pp of test F1 (more than {AUTO_INT8_MAX_LOSS_PP} pp)"
    )


def record_precision_check(
    adapter: str, data_root: str | None = None, split: str = "test"
) -> dict[str, Any]:
    """Measure each head's F1 in FP32 and int8 on its own dataset and record it in the card
    (the weights, and so the version, are unchanged). Returns the recorded check."""
    from openmed_ray.models.bundle import load_bundle, update_card
    from openmed_ray.models.catalog import resolve_adapter
    from openmed_ray.train.evaluate import evaluate_adapter

    directory = resolve_adapter(adapter)
    bundle = load_bundle(directory)
    datasets = {head["name"]: head["dataset"] for head in bundle.card.get("heads", [])} or {
        bundle.name: bundle.card.get("dataset")
    }
    heads = {}
    for head, dataset in datasets.items():
        if not dataset:
            raise OpenMedError(f"{directory}: the card names no dataset to measure {head} on")
        spec = f"{directory}:{head}" if bundle.is_multitask else str(directory)
        f1 = {
            precision: evaluate_adapter(
                spec, dataset, split, data_root=data_root, precision=precision
            ).f1
            for precision in ("fp32", "int8")
        }
        heads[head] = {
            "dataset": dataset,
            "fp32_f1": f1["fp32"],
            "int8_f1": f1["int8"],
            "int8_delta_pp": round(100 * (f1["int8"] - f1["fp32"]), 3),
        }
    check = {
        "split": split,
        "heads": heads,
        "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    update_card(Path(directory), **{CHECK_FIELD: check})
    return check
