"""Cluster configs: every YAML parses, carries the fields its consumer requires, and names
entry points that exist."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
REPO = CLUSTER.parent


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


YAML_FILES = sorted(CLUSTER.rglob("*.yaml"))


def test_there_are_configs_to_check():
    names = {p.relative_to(CLUSTER).as_posix() for p in YAML_FILES}
    assert {
        "runtime_env.yaml",
        "aws-gpu.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob-annotate.yaml",
    } <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.name)
def test_every_yaml_parses_to_mappings(path):
    docs = documents(path)
    assert docs and all(isinstance(d, dict) for d in docs)


def test_cluster_launcher_config():
    config = documents(CLUSTER / "aws-gpu.yaml")[0]
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
        assert key in config, key
    assert config["head_node_type"] in config["available_node_types"]
    assert config["provider"]["type"] in {"aws", "gcp", "azure"}
    gpu_types = [
        t for t in config["available_node_types"].values() if t["resources"].get("GPU", 0) > 0
    ]
    assert gpu_types and all(t["max_workers"] >= t["min_workers"] for t in gpu_types)


def kuberay_manifests() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted((CLUSTER / "kuberay").glob("*.yaml")) for d in documents(p)]


def test_kuberay_manifests_carry_their_crd_fields():
    kinds = set()
    for path, manifest in kuberay_manifests():
        assert manifest["apiVersion"] == "ray.io/v1", path
        kinds.add(manifest["kind"])
        spec = manifest["spec"]
        if manifest["kind"] == "RayCluster":
            cluster = spec
        elif manifest["kind"] == "RayJob":
            assert spec["entrypoint"]
            assert "rayClusterSpec" in spec or "clusterSelector" in spec, path
            cluster = spec.get("rayClusterSpec")
        elif manifest["kind"] == "RayCronJob":
            assert re.fullmatch(r"(\S+\s+){4}\S+", spec["schedule"]), spec["schedule"]
            job = spec["jobTemplate"]
            assert job["entrypoint"]
            assert "rayClusterSpec" in job or "clusterSelector" in job, path
            cluster = job.get("rayClusterSpec")
        else:
            raise AssertionError(f"{path}: unexpected kind {manifest['kind']}")
        if cluster is not None:
            assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
            for group in cluster.get("workerGroupSpecs", []):
                assert group["groupName"] and group["template"]["spec"]["containers"]
                assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert {"RayCluster", "RayJob"} <= kinds


def entrypoints() -> list[tuple[str, str]]:
    """(config file, command) for every command a config runs."""
    found = []
    for path, manifest in kuberay_manifests():
        spec = manifest["spec"]
        for command in (spec.get("entrypoint"), spec.get("jobTemplate", {}).get("entrypoint")):
            if command:
                found.append((path.name, command))
    for path in [CLUSTER / "aws-gpu.yaml", REPO / "README.md"]:
        for line in path.read_text().replace("\\\n", " ").splitlines():
            if "python jobs/" in line:
                found.append((path.name, line[line.index("python jobs/") :]))
    return found


def test_named_job_entry_points_exist_and_parse_their_arguments():
    from openmed_ray.cli import build_parser

    commands = entrypoints()
    assert any(name == "rayjob-annotate.yaml" for name, _ in commands)
    verbs = {
        "annotate_corpus.py": "annotate",
        "finetune.py": "finetune",
        "hpo_sweep.py": "tune",
        "select_best.py": "select",
        "kg_extract.py": "kg",
        "dapt.py": "dapt",
        "prepare_corpus.py": "corpus",
        "train_relations.py": "train-relations",
    }
    for name, command in commands:
        words = shlex.split(command.replace("...", ""))
        script = REPO / words[1]
        assert script.is_file(), f"{name}: {words[1]} does not exist"
        verb = verbs[script.name]
        assert f'main(["{verb}"' in script.read_text()
        arguments = [w for w in words[2:] if not w.startswith("#")]
        if "#" in words:
            arguments = words[2 : words.index("#")]
        build_parser().parse_args([verb, *arguments])  # every flag is one the verb accepts


def test_no_job_shadows_a_standard_library_module():
    # `python jobs/X.py` puts jobs/ first on sys.path: jobs/select.py broke `import torch`.
    import sys

    shadowing = [p.name for p in (REPO / "jobs").glob("*.py") if p.stem in sys.stdlib_module_names]
    assert not shadowing
