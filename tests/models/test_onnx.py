"""ONNX Runtime inference: the exported model predicts what torch does, int8 stays close, and
the export is cached per adapter version."""

import numpy as np
import pytest
import torch

from openmed_ray.errors import OpenMedError
from openmed_ray.models.adapters import identify_adapter, load_predictor
from openmed_ray.models.inference import pad_batch
from openmed_ray.models.onnx import CACHE_ENV, OnnxTokenClassifier, onnx_cache_dir
from tests.annotate.conftest import make_texts


@pytest.fixture
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return onnx_cache_dir()


def batch(tokenizer, n=24):
    ids = tokenizer(make_texts(n, seed=3), add_special_tokens=True)["input_ids"]
    return pad_batch(ids, tokenizer.pad_token_id)


def test_onnx_fp32_matches_torch_and_is_cached(tiny_bundle, onnx_cache):
    reference = load_predictor(str(tiny_bundle))
    onnx = load_predictor(str(tiny_bundle), runtime="onnx", threads=1)
    assert isinstance(onnx.model, OnnxTokenClassifier)
    assert onnx.version == f"{reference.version}-onnx"
    ids, mask = batch(reference.tokenizer)
    assert int(mask.sum()) < mask.numel()  # ragged rows: the mask path is exercised
    with torch.inference_mode():
        expected = reference.model(ids, mask)
    got = onnx.model(ids, mask)
    real = mask.bool()
    assert torch.allclose(got[real], expected[real], atol=1e-4)

    exported = onnx.model.path
    assert exported.parent == onnx_cache and exported.name.endswith("-fp32.onnx")
    stamp = exported.stat().st_mtime_ns
    again = load_predictor(str(tiny_bundle), runtime="onnx", threads=1)
    assert again.model.path == exported and exported.stat().st_mtime_ns == stamp
    assert not [p for p in onnx_cache.iterdir() if p.name.startswith(".")]  # no temp files


def test_onnx_int8_keeps_the_predictions_and_the_head_in_fp32(tiny_bundle, onnx_cache):
    import onnx as onnx_lib

    reference = load_predictor(str(tiny_bundle))
    quantized = load_predictor(str(tiny_bundle), runtime="onnx", precision="int8", threads=1)
    assert quantized.version == f"{reference.version}-onnx-int8"
    graph = onnx_lib.load(str(quantized.model.path)).graph
    assert any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger") for n in graph.node)
    head = {i.name for i in graph.initializer if "classifier" in i.name}
    assert head and all(
        graph_init.data_type == 1 for graph_init in graph.initializer if graph_init.name in head
    )  # FLOAT
    ids, mask = batch(reference.tokenizer)
    with torch.inference_mode():
        expected = reference.model(ids, mask).argmax(-1)
    got = quantized.model(ids, mask).argmax(-1)
    real = mask.bool()
    agreement = (got[real] == expected[real]).float().mean().item()
    assert agreement >= 0.95, agreement


def test_bad_runtime_requests_fail_clearly(tiny_bundle):
    with pytest.raises(OpenMedError, match="onnx runtime runs fp32 or int8"):
        identify_adapter(str(tiny_bundle), "bf16", "onnx")
    with pytest.raises(OpenMedError, match="runtime must be one of"):
        identify_adapter(str(tiny_bundle), "fp32", "tensorrt")


def test_annotator_entities_match_between_runtimes(tiny_bundle, onnx_cache):
    from openmed_ray.annotate.annotator import Annotator

    texts = make_texts(40, seed=9)
    torch_results = Annotator([str(tiny_bundle)], threads=1).annotate(texts)
    onnx_results = Annotator([str(tiny_bundle)], threads=1, runtime="onnx").annotate(texts)
    for a, b in zip(torch_results, onnx_results, strict=True):
        assert [(e.start, e.end, e.label) for e in a.entities] == [
            (e.start, e.end, e.label) for e in b.entities
        ]
        assert np.allclose([e.score for e in a.entities], [e.score for e in b.entities], atol=1e-4)
