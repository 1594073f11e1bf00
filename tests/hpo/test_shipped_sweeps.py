"""The sweeps behind the shipped adapters: committed configs, their ledgers, and the cards."""

from pathlib import Path

import pytest

from openmed_ray.config import SweepConfig
from openmed_ray.hpo.ledger import read_ledger, sweep_fingerprint
from openmed_ray.models.bundle import read_card
from openmed_ray.models.catalog import SHIPPED_DIR, adapter_name_for

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "benchmarks" / "sweeps").glob("*.yaml"))


def test_there_is_a_sweep_config_per_shipped_adapter():
    names = {path.stem for path in CONFIGS}
    assert {"ncbi-disease", "chemical", "disease", "gene", "species", "all-types"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_a_committed_sweep_config_and_its_ledger_agree(path):
    config = SweepConfig.from_yaml(path)
    assert adapter_name_for("+".join(config.finetune.task_datasets)) == path.stem
    assert config.ledger == f"benchmarks/results/sweeps/{path.stem}.trials.json"
    assert config.trials >= 16  # the minimum per dataset
    ledger = read_ledger(str(REPO / config.ledger))
    if ledger is not None:  # a sweep has started: its trials belong to this very search
        assert ledger.fingerprint == sweep_fingerprint(config)
        assert len(ledger.trials) <= config.trials


def test_a_card_from_a_sweep_names_its_committed_ledger():
    for card_path in sorted(SHIPPED_DIR.glob("*/card.json")):
        sweep = read_card(card_path.parent).get("sweep")
        if sweep is None:
            continue
        ledger = read_ledger(str(REPO / sweep["ledger"]))
        assert ledger is not None and ledger.sweep_id == sweep["sweep_id"], card_path
        assert sweep["trials"] == len(ledger.trials)
        assert sweep["final_max_train_sentences"] is None  # the full training set
