"""The in-process annotator: raw documents in, entities with character offsets out.

It checks each text, hands the good ones to every backend (transformer adapters, spaCy
pipelines; see `backends/`), and gathers their entities per document. Bad texts become error
results in place, so every input document has exactly one result.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from openmed_ray.annotate.backends.base import Backend, Entity
from openmed_ray.annotate.backends.transformers import TransformersBackend
from openmed_ray.models.spacy_pipelines import is_spacy_spec

__all__ = ["Annotator", "DocumentResult", "Entity", "check_text"]


@dataclass
class DocumentResult:
    status: str  # "ok" or "error"
    error: str | None
    n_chars: int
    n_wordpieces: int = 0
    entities: list[Entity] = field(default_factory=list)


def check_text(value: object) -> tuple[str | None, str | None]:
    """(text, None) for a usable document, else (None, reason). Bytes must decode as UTF-8."""
    if value is None:
        return None, "text is null"
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"text is not valid UTF-8: {exc}"
    if not isinstance(value, str):
        return None, f"text is not a string but {type(value).__name__}"
    if not value.strip():
        return None, "text is empty"
    return value, None


@contextmanager
def _gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Annotator:
    """Loads every requested adapter once (one backend per kind); annotates batches of texts.

    Adapters are catalog names, bundle paths or HF model directories (one transformers
    backend for all of them, sharing tokenization) and `spacy:PACKAGE_OR_PATH` pipelines.
    `compile` compiles the torch fp32/bf16 models (models/compiled.py): same predictions,
    faster once the first batches have paid for the compile. `cpu_bf16` fixes whether
    `precision="auto"` may pick bf16 on a CPU (None: whether this CPU has AMX), so the actors
    of a run resolve `auto` as its driver did. `streams` is how many forward passes run at
    once on a CPU (models/inference.py, `choose_streams`; None: auto).
    """

    def __init__(
        self,
        adapters: Sequence[str],
        *,
        batch_size: int = 64,
        aggregation: str = "first",
        threshold: float = 0.0,
        precision: str = "fp32",
        runtime: str = "torch",
        threads: int | None = None,
        device: str = "cpu",
        compile: bool = False,
        cpu_bf16: bool | None = None,
        streams: int | None = None,
    ) -> None:
        if not adapters:
            raise ValueError("at least one adapter is required")
        if threads:
            torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS from num_cpus; be explicit
        transformer_specs = [a for a in adapters if not is_spacy_spec(a)]
        self.backends: list[Backend] = []
        if transformer_specs:
            self.backends.append(
                TransformersBackend(
                    transformer_specs,
                    batch_size=batch_size,
                    aggregation=aggregation,
                    threshold=threshold,
                    precision=precision,
                    runtime=runtime,
                    threads=threads,
                    device=device,
                    compile=compile,
                    cpu_bf16=cpu_bf16,
                    streams=streams,
                )
            )
        if len(transformer_specs) < len(adapters):
            from openmed_ray.annotate.backends.spacy import SpacyBackend

            self.backends += [
                SpacyBackend(spec, batch_size=batch_size)
                for spec in adapters
                if is_spacy_spec(spec)
            ]

    @property
    def n_sources(self) -> int:
        """Distinct `adapter` values of the entities (a multi-type bundle has one per head)."""
        return sum(backend.n_sources for backend in self.backends)

    def annotate(self, texts: Sequence[object]) -> list[DocumentResult]:
        """One result per input text, in order; a bad text becomes an error result."""
        # A batch allocates many small objects that all live until it ends; the cyclic GC
        # would rescan them repeatedly (measured: about 4% of a batch), for nothing to free.
        with _gc_paused():
            results: list[DocumentResult] = []
            good: list[int] = []
            clean: list[str] = []
            for value in texts:
                text, error = check_text(value)
                if text is None:
                    results.append(DocumentResult("error", error, 0))
                else:
                    good.append(len(results))
                    clean.append(text)
                    results.append(DocumentResult("ok", None, len(text)))
            for backend in self.backends:
                for index, output in zip(good, backend.annotate(clean), strict=True):
                    results[index].entities.extend(output.entities)
                    results[index].n_wordpieces += output.n_wordpieces
            return results
