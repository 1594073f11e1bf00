"""ONNX Runtime inference for token classifiers.

A merged classifier is exported once per adapter version and precision into a local cache
(`$OPENMED_RAY_CACHE/onnx`, default `~/.cache/openmed-ray/onnx`), checked against the torch
model, optionally quantized to int8 (dynamic, per output channel), and run by an
`InferenceSession` behind the same `forward(input_ids, attention_mask) -> logits` interface
as the torch model, so windowing, stitching and decoding are shared unchanged.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import numpy as np
import torch

from openmed_ray.errors import OpenMedError

log = logging.getLogger(__name__)

CACHE_ENV = "OPENMED_RAY_CACHE"
INPUTS = ("input_ids", "attention_mask")
# Exported logits must match torch's to this (FP32 reorderings only).
EXPORT_TOLERANCE = 1e-3


def onnx_cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "openmed-ray"
    return Path(root).expanduser() / "onnx"


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise OpenMedError(
            "the onnx runtime needs onnxruntime and onnx: pip install 'openmed-ray[onnx]'"
        ) from None
    return onnxruntime


def _sample_batch(vocab_size: int, rows: int, width: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Token ids with ragged padding, so the exported graph keeps the attention mask path."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, max(101, vocab_size - 1), (rows, width), generator=generator)
    mask = torch.ones_like(ids)
    for row in range(1, rows):
        mask[row, width - row * (width // rows) :] = 0
    return ids, mask


def export_onnx(model: torch.nn.Module, path: Path, vocab_size: int) -> None:
    """Export with dynamic batch and sequence axes, then verify against torch on new shapes."""
    require_onnxruntime()
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    model = model.eval()
    torch.onnx.export(
        model,
        _sample_batch(vocab_size, 3, 24, seed=0),
        str(path),
        input_names=list(INPUTS),
        output_names=["logits"],
        dynamic_shapes=({0: batch, 1: sequence}, {0: batch, 1: sequence}),
        dynamo=True,
        optimize=True,
        verbose=False,
    )
    session = _session(path, threads=1)
    for rows, width in ((5, 37), (1, 6)):
        ids, mask = _sample_batch(vocab_size, rows, width, seed=rows)
        with torch.inference_mode():
            expected = model(ids, mask).float().numpy()
        got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        if got.shape != expected.shape or np.abs(got - expected).max() > EXPORT_TOLERANCE:
            raise OpenMedError(
                f"the ONNX export of this model disagrees with torch on a {rows}x{width} batch "
                f"(max difference {np.abs(got - expected).max():.2e}); use --runtime torch"
            )


def _head_nodes(path: Path) -> list[str]:
    """Nodes reading the token-classification head's weights: kept in FP32 when quantizing,
    because the label scores come straight out of them (and they cost almost nothing)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    head = {i.name for i in graph.initializer if "classifier" in i.name}
    return [node.name for node in graph.node if head & set(node.input)]


def quantize_onnx(source: Path, target: Path) -> None:
    """Dynamic int8: weights per output channel, activations quantized per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=_head_nodes(source),
    )


def _session(path: Path, threads: int):
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxTokenClassifier(torch.nn.Module):
    """An InferenceSession with the torch classifier's forward(input_ids, attention_mask)."""

    def __init__(self, path: Path, threads: int) -> None:
        super().__init__()
        self.path = path
        self.session = _session(path, threads)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feeds = {
            "input_ids": input_ids.cpu().numpy(),
            "attention_mask": attention_mask.cpu().numpy(),
        }
        return torch.from_numpy(self.session.run(None, feeds)[0])


def onnx_classifier(
    model: torch.nn.Module, key: str, precision: str, vocab_size: int, threads: int
) -> OnnxTokenClassifier:
    """The cached ONNX model for `key` (an adapter version) at `precision`, built if missing.

    Files are written under temporary names and renamed into place, so actors building the
    same model at once on one node never read a half-written file.
    """
    if precision not in ("fp32", "int8"):
        raise OpenMedError(f"the onnx runtime supports precision fp32 or int8, not {precision!r}")
    cache = onnx_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    fp32_path = cache / f"{key}-fp32.onnx"
    target = cache / f"{key}-{precision}.onnx"
    if not fp32_path.is_file():
        log.info("exporting %s to ONNX (%s)", key, fp32_path)
        temporary = cache / f".{key}-{uuid.uuid4().hex}.onnx"
        export_onnx(model, temporary, vocab_size)
        _rename_into_place(temporary, fp32_path)
    if not target.is_file():
        temporary = cache / f".{key}-{precision}-{uuid.uuid4().hex}.onnx"
        quantize_onnx(fp32_path, temporary)
        _rename_into_place(temporary, target)
    return OnnxTokenClassifier(target, threads)


def _rename_into_place(temporary: Path, final: Path) -> None:
    # The dynamo exporter may write weights beside the graph; keep one self-contained file.
    data = temporary.with_name(temporary.name + ".data")
    if data.exists():
        import onnx

        onnx.save(onnx.load(str(temporary)), str(temporary), save_as_external_data=False)
        data.unlink()
    os.replace(temporary, final)
