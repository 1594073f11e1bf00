"""Adapter bundles: card updates keep the weights and the version."""

import shutil

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
    assert "## Configuration choice" in readme and "full 0.8302" in readme
    assert load_bundle(bundle_dir).version == before["version"]
