"""Documents to sentence-aligned passages of a bounded number of wordpieces (for DAPT).

A passage is a run of whole sentences whose wordpieces, with the special tokens the model
adds, number between `min_wordpieces` and `max_wordpieces`. Sentences are packed greedily; a
sentence longer than a passage is cut at word boundaries. A short tail joins the previous
passage when it fits; other passages below the minimum are dropped (counted by the caller
through `DocumentPassages.dropped_wordpieces`).

Counts come from one tokenization of the whole document, and cuts fall between words, so a
passage re-tokenized on its own gives the same wordpieces (exactly so for WordPiece).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field

from openmed_ray.text.tokenize import sentence_spans

__all__ = ["DocumentPassages", "Passage", "split_passages"]


@dataclass(frozen=True)
class Passage:
    start: int  # character offsets into the document, end exclusive
    end: int
    n_wordpieces: int  # special tokens included: what the model sees


@dataclass
class DocumentPassages:
    passages: list[Passage] = field(default_factory=list)
    wordpieces: int = 0  # the document's wordpieces, special tokens excluded
    special_tokens: int = 2

    @property
    def dropped_wordpieces(self) -> int:
        kept = sum(p.n_wordpieces - self.special_tokens for p in self.passages)
        return self.wordpieces - kept


def _sentence_units(
    starts: list[int], word_ids: list[int | None], text: str, capacity: int
) -> list[tuple[int, int]]:
    """Piece ranges [lo, hi) per sentence; sentences over `capacity` pieces are cut at words."""
    units = []
    for begin, end in sentence_spans(text):
        lo, hi = bisect_left(starts, begin), bisect_left(starts, end)
        while hi - lo > capacity:
            cut = lo + capacity
            # Back off to the first piece of the word the cut would split (keep >= 1 piece).
            while cut > lo + 1 and word_ids[cut] == word_ids[cut - 1]:
                cut -= 1
            if cut == lo + 1 and word_ids[cut] == word_ids[cut - 1]:
                cut = lo + capacity  # one word longer than a passage: cut inside it
            units.append((lo, cut))
            lo = cut
        if hi > lo:
            units.append((lo, hi))
    return units


def _pack(units: list[tuple[int, int]], capacity: int, minimum: int) -> list[tuple[int, int]]:
    packed: list[tuple[int, int]] = []
    for lo, hi in units:
        if packed and hi - packed[-1][0] <= capacity:
            packed[-1] = (packed[-1][0], hi)
        else:
            packed.append((lo, hi))
    kept: list[tuple[int, int]] = []
    for lo, hi in packed:
        if hi - lo >= minimum:
            kept.append((lo, hi))
        elif kept and hi - kept[-1][0] <= capacity:  # a short tail joins its predecessor
            kept[-1] = (kept[-1][0], hi)
    return kept


def split_passages(
    texts: Sequence[str],
    tokenizer,
    *,
    min_wordpieces: int = 50,
    max_wordpieces: int = 256,
) -> list[DocumentPassages]:
    """Sentence-aligned passages of every text (one tokenizer call for the whole batch)."""
    special = tokenizer.num_special_tokens_to_add(pair=False)
    capacity = max_wordpieces - special
    minimum = max(1, min_wordpieces - special)
    if capacity < 1:
        raise ValueError(
            f"max_wordpieces {max_wordpieces} leaves no room beside {special} specials"
        )
    encodings = tokenizer(
        list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    out = []
    for index, text in enumerate(texts):
        offsets = encodings["offset_mapping"][index]
        word_ids = encodings.word_ids(index)
        starts = [start for start, _ in offsets]
        units = _sentence_units(starts, word_ids, text, capacity)
        passages = [
            Passage(offsets[lo][0], offsets[hi - 1][1], hi - lo + special)
            for lo, hi in _pack(units, capacity, minimum)
        ]
        out.append(DocumentPassages(passages, len(offsets), special))
    return out
