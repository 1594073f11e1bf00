"""Connecting to Ray: the one place that decides which cluster a run uses."""

from __future__ import annotations

import os
from typing import Any

from openmed_ray.errors import ResourceError


def ensure_ray(address: str | None = None, **init_options: Any) -> None:
    """Initialise Ray once: `address`, else $RAY_ADDRESS (set by `ray job submit`), else local.

    Ray's own default would join whatever /tmp/ray/ray_current_cluster names, and a stale file
    left by a dead `ray start` makes that hang on GCS timeouts. Joining a running cluster is
    therefore explicit: pass `auto` or its address.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, ignore_reinit_error=True, **init_options)


def require_resources(units: int, cpus_each: float, gpus_each: float, unit: str, hint: str) -> None:
    """Fail before any work when `units` x (CPUs, GPUs) can never fit the connected cluster."""
    import ray

    total = ray.cluster_resources()
    for kind, each in (("GPU", gpus_each), ("CPU", cpus_each)):
        have, need = total.get(kind, 0.0), units * each
        if each > 0 and need > have:
            raise ResourceError(
                f"{units} {unit}(s) x {each:g} {kind} need {need:g} {kind}s, but the Ray cluster "
                f"has {have:g}; {hint}"
            )
