"""ensure_ray: a local Ray's workers ask their own cluster about their actors, never another Ray."""

import json
import os
import subprocess
import sys
import textwrap


def run_probe(script: str) -> dict:
    """Run `script` in a fresh interpreter with no Ray address; return its last JSON line."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


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
    seen = run_probe(PROBE)
    assert seen["latest_ray_start"] and seen["latest_ray_start"] != seen["ours"]
    assert seen["resolved"] == seen["ours"]
    # The driver's environment is restored, so a later ensure_ray() starts a fresh Ray.
    assert seen["driver_ray_address"] is None


# Ray without a dashboard still records the default dashboard port as its API server.
DASHBOARD_PROBE = textwrap.dedent(
    """
    import json, subprocess, sys, ray
    from openmed_ray.runtime import ensure_ray

    ensure_ray(num_cpus=1, include_dashboard=False, log_to_driver=False)
    # Another Ray with a dashboard on the default port (8265 when free) starts beside ours.
    other = subprocess.Popen(
        [sys.executable, "-c", "import sys, ray; ray.init(address='local', num_cpus=1, "
         "include_dashboard=True); print('up', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert other.stdout.readline().strip() == "up"

    @ray.remote
    class Alive:
        def actor_id(self):
            return ray.get_runtime_context().get_actor_id()

    @ray.remote
    def ask_state_api(actor_id):
        # What Train's PlacementGroupCleaner asks before removing a run's placement group.
        from ray.train.v2._internal.state.util import is_actor_alive
        from ray.util.state.exception import RayStateApiException
        try:
            return is_actor_alive(actor_id=actor_id, timeout=10)
        except RayStateApiException:
            return "unknown"

    alive = Alive.remote()
    print(json.dumps({"answer": ray.get(ask_state_api.remote(ray.get(alive.actor_id.remote())))}))
    other.stdin.close()
    other.wait(timeout=60)
    """
)


def test_local_ray_without_dashboard_never_hears_another_rays_no_such_actor():
    answer = run_probe(DASHBOARD_PROBE)["answer"]
    # "unknown" keeps the cleaner monitoring; False would make it kill a healthy run.
    assert answer in (True, "unknown")
