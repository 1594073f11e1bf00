"""ensure_ray: a local Ray's workers resolve their own cluster, not the one `ray start` named."""

import json
import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import json, os, ray
    from ray._private.utils import read_ray_address
    from openmed_ray.runtime import ensure_ray

    ensure_ray(num_cpus=1, include_dashboard=False, log_to_driver=False)

    @ray.remote
    def resolve_without_address():
        from ray._private.services import canonicalize_bootstrap_address_or_die
        return canonicalize_bootstrap_address_or_die(None)

    print(json.dumps({
        "ours": ray.get_runtime_context().gcs_address,
        "latest_ray_start": read_ray_address(),
        "resolved": ray.get(resolve_without_address.remote()),
        "driver_ray_address": os.environ.get("RAY_ADDRESS"),
    }))
    """
)


def test_local_ray_workers_resolve_their_own_cluster_beside_a_ray_start_head(ray_head):
    # `ray start --head` (the ray_head fixture) wrote /tmp/ray/ray_current_cluster, which Ray's
    # state API, and so Train's PlacementGroupCleaner, resolves when given no address.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["latest_ray_start"] and seen["latest_ray_start"] != seen["ours"]
    assert seen["resolved"] == seen["ours"]
    # The driver's environment is restored, so a later ensure_ray() starts a fresh Ray.
    assert seen["driver_ray_address"] is None
