"""`--precision auto`: the choice rule, and the measurement it reads from the card."""

import shutil

import pytest

from openmed_ray.models.adapters import identify_adapter, load_predictor
from openmed_ray.models.bundle import bundle_version, read_card
from openmed_ray.models.precision import choose_precision, record_precision_check
from openmed_ray.train.evaluate import evaluate_adapter


def card_with(*deltas):
    heads = {f"h{i}": {"int8_delta_pp": d} for i, d in enumerate(deltas)}
    return {"precision_check": {"heads": heads}}


def test_auto_rule():
    assert choose_precision({}).precision == "fp32"
    assert "no int8 F1 measurement" in choose_precision({}).reason
    assert choose_precision(card_with(-0.2, 0.1)).precision == "int8"
    # The worst head decides: one head losing 0.5 pp keeps the whole bundle in FP32.
    worst = choose_precision(card_with(0.4, -0.5))
    assert worst.precision == "fp32" and "0.50 pp" in worst.reason
    assert choose_precision(card_with(-0.2), device="cuda").precision == "bf16"
    assert choose_precision({}, device="cuda:0", runtime="onnx").precision == "fp32"


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
    identity = identify_adapter(str(bundle), "auto")
    expected = choose_precision(card)
    assert (identity.precision, identity.precision_reason) == (expected.precision, expected.reason)
    suffix = "-int8" if expected.precision == "int8" else ""
    assert identity.version == version + suffix
    predictor = load_predictor(str(bundle), precision="auto")
    quantized = any("quantized" in type(m).__module__ for m in predictor.model.modules())
    assert quantized == (expected.precision == "int8")


def test_bad_precision_is_refused(tiny_bundle):
    with pytest.raises(Exception, match="precision must be auto or one of"):
        identify_adapter(str(tiny_bundle), "fp8")
