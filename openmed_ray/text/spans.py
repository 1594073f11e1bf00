"""BIO (IOB2) tag sequences to entity spans, in word and character coordinates.

Chunking follows seqeval's default (conlleval-compatible) mode so that spans written by the
annotator are exactly the entities the evaluation counts: an ``I-X`` after ``O`` or after a
chunk of another type starts a new chunk instead of being dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["bio_to_spans", "word_spans_to_char_spans", "tags_to_char_entities"]


def _parse(tag: str, index: int) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, sep, label = tag.partition("-")
    if prefix not in ("B", "I") or not sep or not label:
        raise ValueError(f"tag {index} is {tag!r}; expected 'O', 'B-<type>' or 'I-<type>'")
    return prefix, label


def bio_to_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Entity spans ``(start_word, end_word_exclusive, type)`` of an IOB2 tag sequence.

    ``B-X`` always starts a chunk; ``I-X`` continues a chunk of type X and otherwise starts one;
    ``O`` closes the open chunk.
    """
    spans: list[tuple[int, int, str]] = []
    start = -1
    current = ""
    for i, tag in enumerate(tags):
        prefix, label = _parse(tag, i)
        if prefix == "O":
            if start >= 0:
                spans.append((start, i, current))
                start = -1
            continue
        if prefix == "B" or start < 0 or label != current:
            if start >= 0:
                spans.append((start, i, current))
            start, current = i, label
    if start >= 0:
        spans.append((start, len(tags), current))
    return spans


def word_spans_to_char_spans(
    word_offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int, str]]
) -> list[tuple[int, int, str]]:
    """Character spans from the first word's start to the last word's end (exclusive)."""
    out: list[tuple[int, int, str]] = []
    for start, end, label in spans:
        if not 0 <= start < end <= len(word_offsets):
            raise ValueError(f"word span ({start}, {end}) is invalid for {len(word_offsets)} words")
        out.append((word_offsets[start][0], word_offsets[end - 1][1], label))
    return out


def tags_to_char_entities(
    text: str, word_offsets: Sequence[tuple[int, int]], tags: Sequence[str]
) -> list[dict[str, Any]]:
    """Entities as ``{"start", "end", "label", "text"}`` dicts with ``text == text[start:end]``."""
    if len(word_offsets) != len(tags):
        raise ValueError(f"got {len(tags)} tags for {len(word_offsets)} words")
    entities: list[dict[str, Any]] = []
    for start, end, label in word_spans_to_char_spans(word_offsets, bio_to_spans(tags)):
        if not 0 <= start <= end <= len(text):
            raise ValueError(f"character span ({start}, {end}) is outside a text of {len(text)}")
        entities.append({"start": start, "end": end, "label": label, "text": text[start:end]})
    return entities
