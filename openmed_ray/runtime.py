"""Connecting to Ray: the one place that decides which cluster a run uses."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
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
    if address == "local":
        start_local_ray(**init_options)
    else:
        ray.init(address=address, ignore_reinit_error=True, **init_options)


def start_local_ray(**init_options: Any) -> None:
    """Start a fresh local Ray whose own processes know its address.

    Ray Train's PlacementGroupCleaner (a detached actor) asks "is my controller alive?" through
    the state API without an address, so it resolves /tmp/ray/ray_current_cluster: the cluster
    of the last `ray start` on the machine (a test suite's head, another job's). The cleaner
    then asks that cluster, hears "no such actor" and removes the placement group of a
    healthy run, killing its workers ("owner died"). Starting the GCS on a known port with
    RAY_ADDRESS in the environment the raylet hands to every worker pins them to this cluster.

    Without a dashboard, Ray still records the default dashboard port (8265) as this cluster's
    API server, so the cleaner would ask whichever Ray serves 8265. A free port of our own
    makes the question fail instead (the cleaner then keeps monitoring) rather than get
    another cluster's "no such actor".
    """
    import ray

    port = free_port()
    gcs_address = f"{ray.util.get_node_ip_address()}:{port}"
    if init_options.get("include_dashboard") is False:
        init_options.setdefault("dashboard_port", free_port())
    with _environment(RAY_GCS_SERVER_PORT=str(port), RAY_ADDRESS=gcs_address):
        ray.init(address="local", ignore_reinit_error=True, **init_options)


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set variables for the processes started inside the block, then restore the driver's."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


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
