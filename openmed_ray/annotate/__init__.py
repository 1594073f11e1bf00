"""Annotation: the in-process annotator and the Ray Data corpus pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openmed_ray.annotate.annotator import Annotator, DocumentResult, Entity

_ANNOTATOR_NAMES = {"Annotator", "DocumentResult", "Entity"}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package's Ray Data sink (write tasks) does not import
    # torch: each Ray worker process would pay about 3 s for it.
    if name in _ANNOTATOR_NAMES:
        from openmed_ray.annotate import annotator

        return getattr(annotator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@lru_cache(maxsize=4)
def _cached_annotator(
    adapters: tuple[str, ...], aggregation: str, precision: str, runtime: str
) -> Annotator:
    from openmed_ray.annotate.annotator import Annotator

    return Annotator(adapters, aggregation=aggregation, precision=precision, runtime=runtime)


def annotate_texts(
    texts: Sequence[str],
    adapters: Sequence[str] | str | None = None,
    *,
    aggregation: str = "first",
    threshold: float = 0.0,
    precision: str = "fp32",
    runtime: str = "torch",
) -> list[list[dict[str, Any]]]:
    """Annotate texts in-process; one list of entity dicts per text.

    Each dict has the Hugging Face pipeline's `aggregation_strategy` fields (`entity_group`,
    `score`, `word`, `start`, `end`), so code written against `pipeline(...)` switches with
    one line; with several adapters (or heads) an `adapter` field says which one found the entity.
    A text that cannot be annotated (None, empty, undecodable) raises ValueError.
    """
    from openmed_ray.models.catalog import DEFAULT_ADAPTERS

    if isinstance(adapters, str):
        adapters = adapters.split(",")
    chosen = tuple(adapters or DEFAULT_ADAPTERS)
    annotator = _cached_annotator(chosen, aggregation, precision, runtime)
    results = annotator.annotate(list(texts))
    output = []
    for index, result in enumerate(results):
        if result.status != "ok":
            raise ValueError(f"text {index}: {result.error}")
        output.append(
            [
                {
                    "entity_group": e.label,
                    "score": e.score,
                    "word": e.text,
                    "start": e.start,
                    "end": e.end,
                    **({"adapter": e.adapter} if annotator.n_sources > 1 else {}),
                }
                for e in result.entities
                if e.score >= threshold
            ]
        )
    return output


__all__ = ["Annotator", "DocumentResult", "Entity", "annotate_texts"]
