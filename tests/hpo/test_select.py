"""Best of breed across two real tiny sweeps with different backbones."""

import json

import pytest

from openmed_ray.errors import OpenMedError
from openmed_ray.hpo.select import select_adapters
from openmed_ray.hpo.sweep import run_sweep
from openmed_ray.models.catalog import CATALOG_ENV, resolve_adapter
from tests.conftest import make_tiny_backbone
from tests.hpo.conftest import sweep_config

pytestmark = pytest.mark.slow


def test_select_registers_the_best_dev_f1_across_sweeps(
    sweep, ray_local, sweep_data_root, tmp_path, monkeypatch
):
    first_output, first = sweep
    one_layer = make_tiny_backbone(tmp_path / "one-layer-bert", layers=1)
    second = run_sweep(
        sweep_config(
            one_layer, sweep_data_root, tmp_path / "second", trials=2, concurrency=2, seed=3
        )
    )
    catalog = tmp_path / "catalog" / "adapters.json"
    rows = select_adapters([first_output, tmp_path / "second"], catalog)

    assert len(rows) == 1 and rows[0]["name"] == "ncbi-disease"
    dev = {c["backbone"]: c["dev_f1"] for c in rows[0]["candidates"]}
    assert dev == {
        first["backbone"]: first["final"]["dev"]["f1"],
        second["backbone"]: second["final"]["dev"]["f1"],
    }
    winner = max((first, second), key=lambda s: s["final"]["dev"]["f1"])
    assert rows[0]["chosen"]["bundle"] == winner["final"]["bundle"]
    # Annotation reads the catalog: the name now resolves to the winning bundle.
    monkeypatch.setenv(CATALOG_ENV, str(catalog))
    assert str(resolve_adapter("ncbi-disease")) == winner["final"]["bundle"]
    assert json.loads(catalog.with_name("selection.json").read_text())[0]["name"] == "ncbi-disease"


def test_select_rejects_what_is_not_a_finished_sweep(tmp_path):
    with pytest.raises(OpenMedError, match="sweep.json not found"):
        select_adapters([tmp_path], tmp_path / "catalog.json")
    (tmp_path / "sweep.json").write_text("{}")
    with pytest.raises(OpenMedError, match="not a finished sweep report"):
        select_adapters([tmp_path], tmp_path / "catalog.json")
