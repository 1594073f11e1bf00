"""The adapter catalog: shipped bundles, user catalogs, and name resolution."""

import json

import pytest

from openmed_ray.cli import main
from openmed_ray.models.adapters import identify_adapter
from openmed_ray.models.bundle import ENCODER_DIR, MULTITASK, bundle_version, read_card
from openmed_ray.models.catalog import (
    DEFAULT_ADAPTERS,
    SHIPPED_DIR,
    UnknownAdapterError,
    catalog_entries,
    list_adapters,
    register_adapter,
    resolve_adapter,
)


def test_shipped_bundles_are_intact():
    for name, path in catalog_entries().items():
        if path.parent != SHIPPED_DIR:
            continue
        card = read_card(path)
        assert card["version"] == bundle_version(path), name  # weights match the card
        assert card["backbone"] == "minilm"
        assert {"dev", "test"} <= set(card["metrics"])
        if card.get("task") == "relation":
            # Test is scored once, at the threshold chosen on dev.
            assert card["metrics"]["test"]["threshold"] == card["metrics"]["dev"]["threshold"]
            assert round(card["threshold"], 4) == card["metrics"]["dev"]["threshold"]
        elif card.get("task") == MULTITASK:
            assert set(card["metrics"]["test"]["by_head"]) == {h["name"] for h in card["heads"]}
            assert all(h["metrics"]["test"]["per_type"] for h in card["heads"])
            assert card["shipped_choice"]["dev_f1_by_config"]
        else:
            assert card["metrics"]["test"]["per_type"]
            assert card["shipped_choice"]["dev_f1_by_config"]  # the configuration choice
        assert (path / "README.md").is_file()
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        if card["method"] == "lora":
            assert (path / "adapter_config.json").is_file(), name
            assert size < 8 * 2**20, name  # a few MB at most
        else:  # the whole encoder, stored in float16 (MiniLM-L6: 45 MB)
            assert (path / ENCODER_DIR / "model.safetensors").is_file(), name
            assert card["save_dtype"] == "float16" and size < 50 * 2**20, name


def test_the_default_adapters_are_shipped():
    for name in DEFAULT_ADAPTERS:
        assert resolve_adapter(name).parent == SHIPPED_DIR, name


def test_user_catalog_registers_and_resolves(tiny_bundle, tmp_path, monkeypatch, capsys):
    catalog = tmp_path / "catalog.json"
    register_adapter(catalog, "my-disease", tiny_bundle)
    monkeypatch.setenv("OPENMED_RAY_CATALOG", str(catalog))
    assert resolve_adapter("my-disease") == tiny_bundle.resolve()
    identity = identify_adapter("my-disease")
    assert identity.name == "my-disease" and identity.version == bundle_version(tiny_bundle)
    assert any(row["name"] == "my-disease" for row in list_adapters())
    assert main(["adapters", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["name"] == "my-disease" and r["test_f1"] is not None for r in rows)


def test_run_directory_resolves_to_its_bundle(tiny_bundle):
    assert resolve_adapter(tiny_bundle.parent) == tiny_bundle.resolve()


def test_unknown_adapter_lists_the_catalog(tmp_path):
    with pytest.raises(UnknownAdapterError, match="unknown adapter 'nope'"):
        identify_adapter("nope")
    with pytest.raises(UnknownAdapterError):
        resolve_adapter(tmp_path)
