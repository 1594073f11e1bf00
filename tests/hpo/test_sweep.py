"""HPO sweeps on local Ray with a tiny BERT: OptunaSearch + ASHA, final retraining, resume."""

import json
import shutil

import pytest

from openmed_ray.errors import ConfigError, OpenMedError, ResourceError, UnknownDatasetError
from openmed_ray.hpo.sweep import EXPERIMENT, run_sweep
from openmed_ray.models.bundle import read_card
from tests.hpo.conftest import sweep_config

pytestmark = pytest.mark.slow


def test_optuna_proposes_asha_prunes_and_the_best_trial_is_retrained(sweep):
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    output, summary = sweep
    trials = summary["trials"]
    assert len(trials) == 4
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 4
    assert "pruned" in {t["status"] for t in trials}, [t["dev_f1_by_epoch"] for t in trials]

    # The searcher Tune checkpointed is Optuna's TPE, and it saw every trial.
    searcher = OptunaSearch()
    searcher.restore_from_dir(str(output / "tune" / EXPERIMENT))
    assert isinstance(searcher._ot_study.sampler, TPESampler)
    assert len(searcher._ot_study.trials) == 4

    best = max((t for t in trials if t["dev_f1"] is not None), key=lambda t: t["dev_f1"])
    assert summary["best"]["trial_id"] == best["trial_id"]
    card = json.loads((output / "final" / "finetune.json").read_text())
    hyper = card["hyperparameters"]
    assert hyper["learning_rate"] == best["params"]["learning_rate"]
    assert hyper["batch_size"] == best["params"]["batch_size"]
    assert hyper["lora"]["rank"] == best["params"]["lora_rank"]
    assert hyper["seed"] == 0
    # The paper's final training: the full training set, for the final epochs.
    assert (hyper["max_train_sentences"], hyper["epochs"]) == (None, 2)
    # One test evaluation, of the final model only.
    assert summary["final"]["test"] == card["metrics"]["test"]
    assert set(summary["final"]["test"]["per_type"]) == {"Chemical", "Disease"}
    for name in ("sweep.json", "sweep.md", "sweep.png"):
        assert (output / name).stat().st_size > 0
    assert json.loads((output / "sweep.json").read_text())["best"] == summary["best"]

    # Each trial reached the ledger as it ended; the shipped card names the sweep.
    ledger = json.loads((output / "trials.json").read_text())
    assert ledger["sweep_id"] == summary["sweep_id"]
    assert sorted(t["trial_id"] for t in ledger["trials"]) == [t["trial_id"] for t in trials]
    assert {t["trial_id"]: t["status"] for t in ledger["trials"]} == {
        t["trial_id"]: t["status"] for t in trials
    }
    provenance = read_card(summary["final"]["bundle"])["sweep"]
    assert provenance["sweep_id"] == summary["sweep_id"]
    assert provenance["trials"] == 4
    assert provenance["best_trial"] == best["trial_id"]
    assert provenance["best_dev_f1"] == best["dev_f1"]
    assert provenance["space"]["learning_rate"] == [1e-3, 3e-2]
    assert provenance["final_epochs"] == card["epochs_trained"] == 2
    assert (provenance["max_train_sentences"], provenance["final_max_train_sentences"]) == (
        800,
        None,
    )


def test_a_sweep_whose_tune_state_is_gone_continues_from_its_ledger(
    sweep, tiny_backbone, sweep_data_root, tmp_path
):
    """A new session on a new disk: only the ledger survived. Its 4 trials are replayed into
    TPE, so the one trial still missing is a new point (TPE with the same seed and no
    history would propose the first trial's point again)."""
    from ray.tune.search.optuna import OptunaSearch

    earlier_output, earlier = sweep
    ledger = tmp_path / "kept" / "trials.json"
    ledger.parent.mkdir()
    shutil.copy(earlier_output / "trials.json", ledger)
    config = sweep_config(
        tiny_backbone, sweep_data_root, tmp_path / "later", ledger=str(ledger), trials=5
    )
    with pytest.raises(OpenMedError, match="records 4 finished trials.*pass --resume"):
        run_sweep(config)
    summary = run_sweep(config.replace(resume=True))

    assert summary["sweep_id"] == earlier["sweep_id"]
    assert (summary["trials_replayed"], summary["trials_run"], len(summary["trials"])) == (4, 1, 5)
    searcher = OptunaSearch()
    searcher.restore_from_dir(str(tmp_path / "later" / "tune" / EXPERIMENT))
    assert len(searcher._ot_study.trials) == 5  # 4 told from the ledger, 1 run here
    old_points = {json.dumps(t["params"], sort_keys=True) for t in earlier["trials"]}
    (new,) = [
        t
        for t in summary["trials"]
        if t["trial_id"] not in {x["trial_id"] for x in earlier["trials"]}
    ]
    assert json.dumps(new["params"], sort_keys=True) not in old_points
    assert len(json.loads(ledger.read_text())["trials"]) == 5
    assert read_card(summary["final"]["bundle"])["sweep"]["trials"] == 5


def test_a_ledger_of_another_search_is_refused(sweep, tiny_backbone, sweep_data_root, tmp_path):
    earlier_output, _ = sweep
    config = sweep_config(
        tiny_backbone,
        sweep_data_root,
        tmp_path / "other",
        ledger=str(earlier_output / "trials.json"),
        space=dict(learning_rate=[1e-4, 1e-3]),
        resume=True,
    )
    with pytest.raises(ConfigError, match=r"trials.json: its trials were run with learning_rate="):
        run_sweep(config)
    assert not (tmp_path / "other" / "tune" / EXPERIMENT).exists()  # no trial started


def test_bad_sweeps_fail_before_any_trial(ray_local, tiny_backbone, tiny_data_root, tmp_path):
    def config(**overrides):
        return sweep_config(tiny_backbone, tiny_data_root, tmp_path / "bad", **overrides)

    with pytest.raises(ResourceError, match="lower --concurrency"):
        run_sweep(config(concurrency=3))
    with pytest.raises(ResourceError, match="GPU"):
        run_sweep(config(gpus_per_trial=1))
    with pytest.raises(UnknownDatasetError):
        run_sweep(
            config(finetune={"dataset": "NoSuchSet", "backbone": str(tiny_backbone), "epochs": 2})
        )
    assert not (tmp_path / "bad" / "tune").exists()


def test_a_sweep_storage_has_one_owner(ray_local, tiny_backbone, tiny_data_root, tmp_path):
    from openmed_ray.config import ClaimConfig
    from openmed_ray.io.claim import OutputClaimedError, acquire_claim

    config = sweep_config(tiny_backbone, tiny_data_root, tmp_path / "sweep")
    held = acquire_claim(
        config.storage_uri, "sweep001", purpose="tune", takeover=False, config=ClaimConfig()
    )
    for resume in (False, True):
        with pytest.raises(OutputClaimedError, match="owned by tune run sweep001"):
            run_sweep(config.replace(resume=resume))
    held.release()
    assert not (tmp_path / "sweep" / "tune" / "sweep").exists()  # no trial ever started
