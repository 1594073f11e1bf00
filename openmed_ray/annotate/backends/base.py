"""What every annotation backend shares: the entity row and the backend lifecycle."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Entity:
    start: int
    end: int
    text: str
    label: str
    score: float
    adapter: str
    adapter_version: str


@dataclass
class BackendOutput:
    """One text's entities from one backend, and the wordpieces its models ran over."""

    entities: list[Entity] = field(default_factory=list)
    n_wordpieces: int = 0


class Backend(ABC):
    """A kind of model the engine can apply (transformers adapters, spaCy pipelines).

    Lifecycle: the constructor loads every model once (per Ray actor); `annotate` takes a
    batch of clean, non-empty texts and returns one output per text, in order, with
    character offsets into that text (`text[start:end] == entity.text`).
    """

    n_sources: int = 1  # distinct `adapter` values its entities carry

    @abstractmethod
    def annotate(self, texts: Sequence[str]) -> list[BackendOutput]: ...
