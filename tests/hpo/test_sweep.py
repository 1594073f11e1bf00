"""HPO sweeps on local Ray with a tiny BERT: OptunaSearch + ASHA, final retraining, resume."""

import json

import pytest

from openmed_ray.errors import ResourceError, UnknownDatasetError
from openmed_ray.hpo.sweep import EXPERIMENT, run_sweep
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
    # One test evaluation, of the final model only.
    assert summary["final"]["test"] == card["metrics"]["test"]
    assert set(summary["final"]["test"]["per_type"]) == {"Chemical", "Disease"}
    for name in ("sweep.json", "sweep.md", "sweep.png"):
        assert (output / name).stat().st_size > 0
    assert json.loads((output / "sweep.json").read_text())["best"] == summary["best"]


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
