"""`--precision auto`: the choice rule, and the measurement it reads from the card."""

import shutil

import pytest
import torch

from openmed_ray.models.adapters import identify_adapter, load_predictor
from openmed_ray.models.bundle import bundle_version, read_card
from openmed_ray.models.precision import choose_precision, record_precision_check
from openmed_ray.train.evaluate import evaluate_adapter


def card_with(*deltas, bf16=None):
    heads = {f"h{i}": {"int8_delta_pp": d} for i, d in enumerate(deltas)}
    for head, delta in zip(heads.values(), bf16 or (), strict=False):
        head["bf16_delta_pp"] = delta
    return {"precision_check": {"heads": heads}}


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_auto_rule(cpu_bf16):
    def choose(card, **kwargs):
        return choose_precision(card, cpu_bf16=cpu_bf16, **kwargs)

    assert choose({}).precision == "fp32"
    assert "no int8 or bf16 F1 measurement" in choose({}).reason
    assert choose(card_with(-0.2, 0.1)).precision == "int8"  # no bf16 measured: int8
    # The worst head decides: one head losing 0.5 pp keeps the whole bundle in FP32.
    worst = choose(card_with(0.4, -0.5))
    assert worst.precision == "fp32" and "0.50 pp" in worst.reason
    assert choose(card_with(-0.2), device="cuda").precision == "bf16"
    assert choose({}, device="cuda:0", runtime="onnx").precision == "fp32"


def test_bf16_on_a_cpu_only_with_amx_and_a_measurement_within_the_bar():
    measured = card_with(-0.2, -0.1, bf16=(-0.1, 0.0))
    with_amx = choose_precision(measured, cpu_bf16=True)
    assert (
        with_amx.precision == "bf16" and "AMX" in with_amx.reason and "0.10 pp" in with_amx.reason
    )
    assert choose_precision(measured, cpu_bf16=False).precision == "int8"
    # bf16 beyond the bar, or one head unmeasured, falls back to the int8 rule.
    assert choose_precision(card_with(-0.2, -0.1, bf16=(-0.1, -0.4)), cpu_bf16=True).precision == (
        "int8"
    )
    assert choose_precision(card_with(-0.2, -0.1, bf16=(0.0,)), cpu_bf16=True).precision == "int8"
    assert choose_precision(card_with(-0.5, bf16=(-0.5,)), cpu_bf16=True).precision == "fp32"
    # The onnx runtime has no bf16: only the int8 rule applies.
    assert choose_precision(measured, runtime="onnx", cpu_bf16=True).precision == "int8"


def test_recorded_check_drives_auto(tiny_multitask_bundle, tiny_multitask_data_root, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_multitask_bundle, bundle)
    version = bundle_version(bundle)
    assert identify_adapter(str(bundle), "auto").precision == "fp32"  # nothing measured yet
    check = record_precision_check(str(bundle), str(tiny_multitask_data_root))
    assert bundle_version(bundle) == version  # the card changed, the weights did not
    card = read_card(bundle)
    assert card["precision_check"] == check and set(check["heads"]) == {"chemical", "disease"}
    for head in card["heads"]:
        measured = check["heads"][head["name"]]
        assert measured["fp32_f1"] == head["metrics"]["test"]["f1"]
        int8 = evaluate_adapter(
            f"{bundle}:{head['name']}",
            head["dataset"],
            data_root=str(tiny_multitask_data_root),
            precision="int8",
        )
        assert measured["int8_f1"] == int8.f1
    for head in check["heads"].values():
        assert head["bf16_delta_pp"] == round(100 * (head["bf16_f1"] - head["fp32_f1"]), 3)
    for cpu_bf16 in (False, True):
        identity = identify_adapter(str(bundle), "auto", cpu_bf16=cpu_bf16)
        expected = choose_precision(card, cpu_bf16=cpu_bf16)
        assert (identity.precision, identity.precision_reason) == (
            expected.precision,
            expected.reason,
        )
        suffix = "" if expected.precision == "fp32" else f"-{expected.precision}"
        assert identity.version == version + suffix
        predictor = load_predictor(str(bundle), precision="auto", cpu_bf16=cpu_bf16)
        quantized = any("quantized" in type(m).__module__ for m in predictor.model.modules())
        assert quantized == (expected.precision == "int8")
        dtypes = {p.dtype for p in predictor.model.parameters()}
        assert (dtypes == {torch.bfloat16}) == (expected.precision == "bf16")


def test_bad_precision_is_refused(tiny_bundle):
    with pytest.raises(Exception, match="precision must be auto or one of"):
        identify_adapter(str(tiny_bundle), "fp8")
