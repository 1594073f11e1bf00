"""The inference precision of an adapter: `auto` picks the fastest one that keeps F1.

`auto` is bfloat16 on a GPU. On a CPU with bfloat16 matrix units (AMX) it is bfloat16 when
the adapter's card records a bf16 measurement that loses at most `AUTO_MAX_LOSS_PP` of test
F1 against FP32 on every head; otherwise int8 (dynamic, per channel) under the same rule on
the int8 measurement, else FP32: a precision is never lowered on faith. Without AMX, bf16
is emulated and slower than FP32 (0.27x of the HF pipeline on an AMD EPYC, against 4.7x
with AMX on a Xeon), so it is never chosen there. `record_precision_check` makes the
measurements and writes them into the card.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmed_ray.errors import OpenMedError

AUTO = "auto"
AUTO_MAX_LOSS_PP = 0.3
CHECK_FIELD = "precision_check"
MEASURED_PRECISIONS = ("int8", "bf16")  # each compared with fp32 in the card's check


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    reason: str


@functools.cache
def cpu_has_bf16_units() -> bool:
    """Whether this machine's CPU has AMX tiles, where bfloat16 matmuls are native."""
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe is not None and probe())


def _worst_loss(check: dict[str, Any], precision: str) -> float | None:
    """The largest F1 loss (pp) of `precision` over the heads; None if a head lacks it."""
    deltas = [head.get(f"{precision}_delta_pp") for head in check["heads"].values()]
    if not deltas or any(delta is None for delta in deltas):
        return None
    return -min(deltas)


def choose_precision(
    card: dict[str, Any],
    device: str = "cpu",
    runtime: str = "torch",
    cpu_bf16: bool | None = None,
) -> PrecisionChoice:
    """What `auto` means for an adapter with this card on this device and runtime.

    `cpu_bf16`: whether the CPU that runs the model has bf16 units (None: this machine's)."""
    if device.startswith("cuda"):
        if runtime == "onnx":
            return PrecisionChoice("fp32", "GPU with the onnx runtime, which has no bf16 here")
        return PrecisionChoice("bf16", "GPU: bfloat16")
    check = card.get(CHECK_FIELD)
    if not check:
        return PrecisionChoice("fp32", "CPU: the card records no int8 or bf16 F1 measurement")
    has_units = cpu_has_bf16_units() if cpu_bf16 is None else cpu_bf16
    if runtime == "torch" and has_units:
        loss = _worst_loss(check, "bf16")
        if loss is not None and loss <= AUTO_MAX_LOSS_PP:
            return PrecisionChoice(
                "bf16",
                f"CPU with bf16 units (AMX): bf16 {_change(loss)} (at most {AUTO_MAX_LOSS_PP} pp lost)",
            )
    loss = _worst_loss(check, "int8")
    if loss is None:
        return PrecisionChoice("fp32", "CPU: the card records no int8 F1 measurement")
    if loss <= AUTO_MAX_LOSS_PP:
        return PrecisionChoice(
            "int8", f"CPU: int8 {_change(loss)} (at most {AUTO_MAX_LOSS_PP} pp lost)"
        )
    return PrecisionChoice(
        "fp32", f"CPU: int8 {_change(loss)} (more than {AUTO_MAX_LOSS_PP} pp lost)"
    )


def _change(loss: float) -> str:
    return f"changes test F1 by {-loss:+.2f} pp on its worst head"


def record_precision_check(
    adapter: str, data_root: str | None = None, split: str = "test"
) -> dict[str, Any]:
    """Measure each head's F1 in FP32, int8 and bf16 on its own dataset and record it in the card
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
            for precision in ("fp32", *MEASURED_PRECISIONS)
        }
        heads[head] = {"dataset": dataset, "fp32_f1": f1["fp32"]}
        for precision in MEASURED_PRECISIONS:
            heads[head][f"{precision}_f1"] = f1[precision]
            heads[head][f"{precision}_delta_pp"] = round(100 * (f1[precision] - f1["fp32"]), 3)
    check = {
        "split": split,
        "heads": heads,
        "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    update_card(Path(directory), **{CHECK_FIELD: check})
    return check
