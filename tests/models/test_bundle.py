"""Adapter bundles: card updates keep the weights and the version."""

import json
import os
import shutil
import subprocess
import sys

from openmed_ray.models.bundle import bundle_version, load_bundle, read_card, update_card


def test_update_card_records_fields_without_touching_weights(tiny_bundle, tmp_path):
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle_dir)
    before = read_card(bundle_dir)
    choice = {
        "rule": "best dev F1; LoRA preferred within 1 pp of full fine-tuning",
        "candidates": {"NCBI-disease": "all-linear"},
        "dev_f1_by_config": {"all-linear": 0.8231, "full": 0.8302},
    }

    card = update_card(bundle_dir, shipped_choice=choice)

    assert card == read_card(bundle_dir) == {**before, "shipped_choice": choice}
    assert bundle_version(bundle_dir) == before["version"]
    readme = (bundle_dir / "README.md").read_text()
    assert "## Configuration choice" in readme and "dev F1, full: 0.8302" in readme
    assert load_bundle(bundle_dir).version == before["version"]


def test_a_multi_type_card_shows_why_its_configuration_was_shipped(tiny_multitask_bundle, tmp_path):
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(tiny_multitask_bundle, bundle_dir)
    choice = {
        "rule": "the smallest dev F1 delta to the single-type adapters",
        "dev_f1_by_config": {"proportional": 0.8205, "temperature": 0.8199},
        "min_dev_delta_pp_by_config": {"proportional": -2.04, "temperature": -1.55},
    }

    update_card(bundle_dir, shipped_choice=choice)

    readme = (bundle_dir / "README.md").read_text()
    assert readme.startswith("# ") and "NER heads" in readme.splitlines()[0]
    assert "- dev F1, temperature: 0.8199" in readme
    assert "single-type adapters, temperature: -1.55 pp" in readme


SAVE_SCRIPT = """
import sys, torch
from openmed_ray.config import LoraConfig
from openmed_ray.models.bundle import save_bundle
from openmed_ray.models.classifier import build_classifier
torch.manual_seed(0)
model = build_classifier(sys.argv[1], 3, LoraConfig(targets=("query", "key", "value", "dense")))
print(save_bundle(model, ["O", "B-X", "I-X"], {}, sys.argv[2], backbone_spec="tiny")["version"])
"""


def test_the_same_weights_get_the_same_version_under_any_hash_seed(tiny_backbone, tmp_path):
    # PEFT keeps target_modules as a set; its order follows PYTHONHASHSEED.
    # The processes run at once: each spends most of its time importing torch and PEFT.
    runs = {
        seed: subprocess.Popen(
            [sys.executable, "-c", SAVE_SCRIPT, str(tiny_backbone), str(tmp_path / seed)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("1", "2", "3", "4")
    }
    versions, configs = set(), set()
    for seed, run in runs.items():
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
        output = tmp_path / seed
        versions.add(stdout.strip().splitlines()[-1])
        configs.add((output / "adapter_config.json").read_text())
        modules = json.loads((output / "adapter_config.json").read_text())["target_modules"]
        assert modules == sorted(modules) and len(modules) > 1
    assert len(versions) == 1 and len(configs) == 1
