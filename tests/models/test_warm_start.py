"""Fine-tuning runs started from an NER bundle's weights (`finetune --init-from`): single-type
and multi-type, full and LoRA; bundles that cannot fit the run refused before any work. The
relation classifier's warm starts are tested in tests/train/test_relations.py."""

import functools
import os

import pytest

from openmed_ray.config import FinetuneConfig, SweepConfig
from openmed_ray.errors import ConfigError
from openmed_ray.models.bundle import BundleError, read_card
from openmed_ray.train.finetune import finetune, finetune_local
from tests.conftest import tiny_finetune_config, tiny_multitask_config

# One epoch at this rate leaves the weights as they started, to float32 precision.
NEGLIGIBLE_RATE = 1e-12


def record(bundle) -> dict:
    card = read_card(bundle)
    return {
        "bundle": str(bundle),
        "version": card["version"],
        "dev_f1": card["metrics"]["dev"]["f1"],
    }


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_run_started_from_a_bundle_begins_at_its_weights(
    method, tiny_backbone, tiny_data_root, tiny_bundle, tmp_path
):
    start = (
        tiny_bundle
        if method == "full"
        else finetune_local(
            tiny_finetune_config(
                tiny_backbone,
                tiny_data_root,
                tmp_path / "lora-start",
                method="lora",
                learning_rate=3e-2,
                epochs=6,
            ),
            name="start",
        ).bundle
    )
    warm = tiny_finetune_config(
        tiny_backbone,
        tiny_data_root,
        tmp_path / "warm",
        method=method,
        init_from=str(start),
        epochs=1,
        learning_rate=NEGLIGIBLE_RATE,
    )
    card = finetune_local(warm, name="warm").card
    # The run's model is the bundle's, so it scores dev and test exactly as the bundle did
    # (a fresh model at this rate tags nothing here).
    assert card["metrics"] == read_card(start)["metrics"]
    assert card["metrics"]["test"]["f1"] > 0.5
    assert card["init_from"] == record(start)


@pytest.mark.slow
def test_a_multi_type_run_on_ray_started_from_relative_paths_keeps_every_head(
    ray_local, tiny_backbone, tiny_multitask_data_root, tiny_multitask_bundle, tmp_path, monkeypatch
):
    # Ray workers run in their own working directory: paths relative to the driver's
    # (bundle, data root) must reach them made absolute.
    monkeypatch.chdir(tmp_path)
    relative = functools.partial(os.path.relpath, start=tmp_path)
    warm = tiny_multitask_config(
        tiny_backbone,  # as the bundle was trained: warm starts compare backbones by name
        relative(tiny_multitask_data_root),
        "warm",
        init_from=relative(tiny_multitask_bundle),
        epochs=1,
        learning_rate=NEGLIGIBLE_RATE,
    )
    card = finetune(warm, name="warm").card
    started = read_card(tiny_multitask_bundle)
    assert [h["name"] for h in card["heads"]] == [h["name"] for h in started["heads"]]
    assert [h["metrics"] for h in card["heads"]] == [h["metrics"] for h in started["heads"]]
    assert card["init_from"]["version"] == started["version"]
    assert card["init_from"]["bundle"] == relative(tiny_multitask_bundle)  # as the user gave it


def test_a_bundle_the_run_cannot_start_from_is_refused_before_training(
    tiny_backbone,
    tiny_data_root,
    tiny_multitask_data_root,
    tiny_bundle,
    tiny_multitask_bundle,
    tiny_relation_bundle,
    tmp_path,
):
    output = tmp_path / "out"

    def refused(match, config):
        with pytest.raises(BundleError, match=match):
            finetune(config)  # the Ray path: refused in pre-flight, before Ray is used

    def single(**changes):
        return tiny_finetune_config(tiny_backbone, tiny_data_root, output, **changes)

    def chemicals(**changes):  # a single-type run on a dataset with other labels
        return tiny_finetune_config(
            tiny_backbone, tiny_multitask_data_root, output, dataset="BC5CDR-chem", **changes
        )

    def multi(**changes):
        return tiny_multitask_config(tiny_backbone, tiny_multitask_data_root, output, **changes)

    start, multi_start = str(tiny_bundle), str(tiny_multitask_bundle)
    refused("method is 'full' but this run's is 'lora'", single(init_from=start, method="lora"))
    refused(
        r"labels is \['O', 'B-Chemical', 'I-Chemical', 'B-Disease', 'I-Disease'\] but this run's is "
        r"\['O', 'B-Chemical', 'I-Chemical'\]",
        chemicals(init_from=start),
    )
    refused("task is 'ner' but this run's is 'ner-multi'", multi(init_from=start))
    refused("task is 'ner-multi' but this run's is 'ner'", chemicals(init_from=multi_start))
    refused(
        "heads is .*'chemical'.* but this run's is .*'chem'",
        multi(init_from=multi_start, head_names=("chem", "dis")),
    )
    refused("is not an NER adapter bundle", single(init_from=str(tiny_relation_bundle)))
    assert not output.exists()


def test_a_sweep_refuses_a_warm_start():
    with pytest.raises(ConfigError, match="finetune.init_from: sweep trials start from"):
        SweepConfig(finetune=FinetuneConfig(init_from="disease"))
