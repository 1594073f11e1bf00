"""Graph compilation of a predictor's model for inference: torch.compile (inductor) with the
weights frozen into the graph, so linear layers run as prepacked oneDNN kernels on a CPU and
bias, GELU and layer norm fuse into their neighbours.

Compiling costs tens of seconds per process (once per actor) and pays back only over many
documents, so `auto` compiles when each actor will see at least `AUTO_MIN_DOCS_PER_ACTOR`
documents, and only where one forward pass runs at a time: with 2 streams on a CPU the
compiled model was never faster than the eager one (benchmarks/annotate_throughput.py, 400
abstracts in process: 43.9 s against 43.1 s, and 37.0 s against 32.8 s in an earlier run; in
a Ray actor 2.56k against 3.67k wordpieces/s). Shapes are dynamic (one graph for every batch
and window length). int8 (dynamic quantization) and the onnx runtime are not compiled; they
have their own kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from openmed_ray.config import COMPILE_MODES

COMPILABLE_PRECISIONS = ("fp32", "bf16")
# Measured on 2 CPU cores with MiniLM (benchmarks/annotate_throughput.py): a compile of about
# 30-45 s saves about 15 ms per abstract, so it breaks even near 3,000 abstracts.
AUTO_MIN_DOCS_PER_ACTOR = 5_000


@dataclass(frozen=True)
class CompileChoice:
    compile: bool
    reason: str


def choose_compile(
    requested: str,
    *,
    runtime: str,
    precisions: list[str],
    docs_per_actor: float | None,
    streams: int,
) -> CompileChoice:
    """Whether a run compiles its torch models: `on`, `off`, or `auto` (long runs with one
    stream only; `streams` is the actors' number of passes in flight, see `choose_streams`).

    `precisions` are the transformer adapters' resolved precisions; compilation applies to
    the torch runtime in fp32 or bf16, so int8-only or onnx runs never compile."""
    if requested not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {COMPILE_MODES}, got {requested!r}")
    if requested == "off":
        return CompileChoice(False, "off: requested")
    if runtime != "torch":
        return CompileChoice(False, f"the {runtime} runtime runs its own optimized graph")
    if not any(compilable(runtime, p) for p in precisions):
        return CompileChoice(False, "no torch adapter runs in fp32 or bf16")
    if requested == "on":
        return CompileChoice(True, "on: requested")
    if streams > 1:
        return CompileChoice(
            False, f"auto: {streams} streams per actor run faster eager than compiled"
        )
    if docs_per_actor is None or docs_per_actor < AUTO_MIN_DOCS_PER_ACTOR:
        seen = "an unknown number of" if docs_per_actor is None else f"{docs_per_actor:.0f}"
        return CompileChoice(
            False,
            f"auto: {seen} documents per actor, fewer than the {AUTO_MIN_DOCS_PER_ACTOR} that "
            "pay back a compile",
        )
    return CompileChoice(
        True,
        f"auto: {docs_per_actor:.0f} documents per actor (at least {AUTO_MIN_DOCS_PER_ACTOR})",
    )


def compilable(runtime: str, precision: str) -> bool:
    """Whether a model at this runtime and precision is one that compiling applies to."""
    return runtime == "torch" and precision in COMPILABLE_PRECISIONS


def compile_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """`model` compiled for inference only: its weights must not change afterwards."""
    return torch.compile(model.eval(), dynamic=True, options={"freezing": True})
