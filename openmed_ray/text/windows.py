"""Sliding wordpiece windows over long sentences, and stitching predictions back to words.

Encoders accept at most ``max_length`` wordpieces (special tokens included), so longer sentences
are cut into overlapping windows. Every word is *owned* by exactly one window (the one in which
its first wordpiece is most central, i.e. has the most context on both sides); only the owner
carries the word's label during training and only the owner's prediction is kept at inference.
Only the first wordpiece of a word carries a label; all other pieces get ``IGNORE_INDEX``.
"""

from __future__ import annotations

import contextlib
import weakref
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "IGNORE_INDEX",
    "WindowSpec",
    "EncodedWindow",
    "plan_windows",
    "assign_owners",
    "encode_words",
    "encode_batch",
    "stitch",
    "gather_first_pieces",
]

T = TypeVar("T")

# Label id ignored by torch's CrossEntropyLoss (its default ignore_index).
IGNORE_INDEX = -100


@dataclass(frozen=True)
class WindowSpec:
    """Window geometry: ``max_length`` counts special tokens; ``overlap`` counts wordpieces."""

    max_length: int = 256
    overlap: int = 50

    def __post_init__(self) -> None:
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int):
            raise ValueError(f"WindowSpec.max_length must be an int, got {self.max_length!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int):
            raise ValueError(f"WindowSpec.overlap must be an int, got {self.overlap!r}")
        if self.max_length < 1:
            raise ValueError(f"WindowSpec.max_length must be >= 1, got {self.max_length}")
        if self.overlap < 0:
            raise ValueError(f"WindowSpec.overlap must be >= 0, got {self.overlap}")
        if self.overlap >= self.max_length:
            raise ValueError(
                f"WindowSpec.overlap ({self.overlap}) must be smaller than "
                f"max_length ({self.max_length})"
            )

    def capacity(self, num_special_tokens: int) -> int:
        """Content wordpieces per window once ``num_special_tokens`` specials are added."""
        capacity = self.max_length - num_special_tokens
        if capacity <= self.overlap:
            raise ValueError(
                f"window capacity {capacity} (max_length {self.max_length} - "
                f"{num_special_tokens} special tokens) must exceed overlap {self.overlap}"
            )
        return capacity


@dataclass
class EncodedWindow:
    """One model input window.

    ``word_ids`` holds, per piece (specials included), the global word index or ``None``.
    ``labels`` holds the label id on the first piece of each word owned by this window and
    ``IGNORE_INDEX`` everywhere else. ``owned_words`` (ascending) and ``first_piece_positions``
    (positions in ``input_ids``) are parallel lists.
    """

    input_ids: list[int]
    word_ids: list[int | None]
    labels: list[int]
    owned_words: list[int] = field(default_factory=list)
    first_piece_positions: list[int] = field(default_factory=list)


def plan_windows(n_pieces: int, capacity: int, overlap: int) -> list[tuple[int, int]]:
    """Piece ranges ``[start, end)`` covering ``n_pieces`` pieces with windows of ``capacity``.

    A single window if everything fits (``[(0, 0)]`` for no pieces). Otherwise windows advance by
    ``capacity - overlap``; the last one is shifted left to end exactly at ``n_pieces`` so that it
    is full-size, which only increases its overlap with the previous window.
    """
    if n_pieces < 0:
        raise ValueError(f"n_pieces must be >= 0, got {n_pieces}")
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    if not 0 <= overlap < capacity:
        raise ValueError(
            f"overlap must satisfy 0 <= overlap < capacity ({capacity}), got {overlap}"
        )
    if n_pieces <= capacity:
        return [(0, n_pieces)]
    stride = capacity - overlap
    windows: list[tuple[int, int]] = []
    start = 0
    while start + capacity < n_pieces:
        windows.append((start, start + capacity))
        start += stride
    windows.append((n_pieces - capacity, n_pieces))
    return windows


def assign_owners(first_pieces: Sequence[int], windows: Sequence[tuple[int, int]]) -> list[int]:
    """Index of the owning window for each word, given the index of the word's first piece.

    The owner is the window containing the piece in which it is most central
    (``max(min(piece - start, end - 1 - piece))``); ties go to the earlier window.
    """
    starts = [s for s, _ in windows]
    ends = [e for _, e in windows]
    # With sorted starts and ends (plan_windows output) the windows containing a piece form the
    # contiguous range [lo, hi), usually one or two windows; otherwise scan them all.
    is_sorted = all(
        starts[k] <= starts[k + 1] and ends[k] <= ends[k + 1] for k in range(len(windows) - 1)
    )
    owners: list[int] = []
    for word, piece in enumerate(first_pieces):
        if is_sorted:
            candidates = range(bisect_right(ends, piece), bisect_right(starts, piece))
        else:
            candidates = range(len(windows))
        best, best_margin = -1, -1
        for k in candidates:
            start, end = windows[k]
            if not start <= piece < end:
                continue
            margin = min(piece - start, end - 1 - piece)
            if margin > best_margin:
                best, best_margin = k, margin
        if best < 0:
            raise ValueError(f"first piece {piece} of word {word} is not inside any window")
        owners.append(best)
    return owners


# Special-token template per tokenizer, so the probe encoding runs once, not once per batch.
_LAYOUTS: weakref.WeakKeyDictionary[Any, tuple[list[int], list[int]]] = weakref.WeakKeyDictionary()


def _special_layout(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Special-token ids the tokenizer puts before and after a single sequence.

    Read from the tokenizer's own post-processing of a probe word rather than hard-coding
    [CLS]/[SEP], so BERT, RoBERTa (<s> ... </s>) and DeBERTa layouts all work. (transformers 5
    fast tokenizers no longer expose ``build_inputs_with_special_tokens``.)
    """
    try:
        cached = _LAYOUTS.get(tokenizer)
    except TypeError:  # unhashable or not weak-referenceable: just recompute
        cached = None
    if cached is not None:
        return cached
    enc = tokenizer([["a"]], is_split_into_words=True, add_special_tokens=True, truncation=False)
    ids = list(enc["input_ids"][0])
    content = [pos for pos, w in enumerate(enc.word_ids(0)) if w is not None]
    n_special = tokenizer.num_special_tokens_to_add(pair=False)
    if not content or content != list(range(content[0], content[-1] + 1)):
        raise ValueError("cannot locate the content pieces among the tokenizer's special tokens")
    layout = (ids[: content[0]], ids[content[-1] + 1 :])
    if len(layout[0]) + len(layout[1]) != n_special:
        raise ValueError(
            f"tokenizer adds {len(layout[0]) + len(layout[1])} special tokens to a sequence "
            f"but reports {n_special} in num_special_tokens_to_add"
        )
    with contextlib.suppress(TypeError):
        _LAYOUTS[tokenizer] = layout
    return layout


def _tokenize(
    tokenizer: Any, sentences: list[list[str]]
) -> tuple[list[list[int]], list[list[int]]]:
    """Content piece ids and word ids for non-empty pre-split sentences, in one tokenizer call."""
    if not sentences:
        return [], []
    enc = tokenizer(
        sentences,
        is_split_into_words=True,
        add_special_tokens=False,
        truncation=False,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    ids = [list(x) for x in enc["input_ids"]]
    word_ids = [list(enc.word_ids(i)) for i in range(len(sentences))]
    return ids, word_ids


def _first_pieces(word_ids: Sequence[int | None], n_words: int) -> list[int]:
    first = [-1] * n_words
    for pos, w in enumerate(word_ids):
        if w is not None and first[w] < 0:
            first[w] = pos
    return first


def encode_batch(
    tokenizer: Any,
    sentences: Sequence[Sequence[str]],
    label_ids: Sequence[Sequence[int]] | None,
    spec: WindowSpec = WindowSpec(),  # noqa: B008 - immutable frozen dataclass
) -> list[list[EncodedWindow]]:
    """Tokenize a batch of pre-split sentences in one fast-tokenizer call and window each one.

    (The special-token layout is probed once per tokenizer object and cached.)

    Words that would produce no wordpiece (empty/whitespace-only strings, or characters the
    tokenizer's normalizer drops) are replaced by ``tokenizer.unk_token`` so that every word keeps
    exactly one label position; such sentences are re-tokenized (rare, second call).
    ``label_ids`` (one id per word) is optional; without it all labels are ``IGNORE_INDEX``.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "a fast (Rust-backed) tokenizer is needed for word alignment (word_ids); "
            f"got {type(tokenizer).__name__}"
        )
    if label_ids is not None and len(label_ids) != len(sentences):
        raise ValueError(f"got {len(label_ids)} label sequences for {len(sentences)} sentences")
    words_list = [[str(w) for w in words] for words in sentences]
    for i, words in enumerate(words_list):
        if label_ids is not None and len(label_ids[i]) != len(words):
            raise ValueError(f"sentence {i}: {len(label_ids[i])} labels for {len(words)} words")
    unk = tokenizer.unk_token

    def _fill_unknown(words: list[str], first: Sequence[int] | None) -> list[str]:
        if unk is None:
            raise ValueError(
                "a word produces no wordpiece and the tokenizer has no unk_token to stand in"
            )
        return [
            unk if (not w.strip() or (first is not None and first[j] < 0)) else w
            for j, w in enumerate(words)
        ]

    # Empty/whitespace-only words are known to vanish: replace them before the single call.
    for i, words in enumerate(words_list):
        if any(not w.strip() for w in words):
            words_list[i] = _fill_unknown(words, None)

    nonempty = [i for i, words in enumerate(words_list) if words]
    ids, wids = _tokenize(tokenizer, [words_list[i] for i in nonempty])
    pieces: list[list[int]] = [[] for _ in words_list]
    word_ids: list[list[int]] = [[] for _ in words_list]
    firsts: list[list[int]] = [[] for _ in words_list]
    retry: list[int] = []
    for j, i in enumerate(nonempty):
        pieces[i], word_ids[i] = ids[j], wids[j]
        firsts[i] = _first_pieces(wids[j], len(words_list[i]))
        if min(firsts[i]) < 0:
            retry.append(i)
    if retry:
        fixed = [_fill_unknown(words_list[i], firsts[i]) for i in retry]
        ids, wids = _tokenize(tokenizer, fixed)
        for j, i in enumerate(retry):
            pieces[i], word_ids[i] = ids[j], wids[j]
            firsts[i] = _first_pieces(wids[j], len(fixed[j]))
            if min(firsts[i]) < 0:
                raise ValueError(f"sentence {i}: a word produces no wordpiece even as unk_token")

    prefix, suffix = _special_layout(tokenizer)
    capacity = spec.capacity(len(prefix) + len(suffix))
    out: list[list[EncodedWindow]] = []
    for i in range(len(words_list)):
        labels = None if label_ids is None else label_ids[i]
        out.append(
            _window_sentence(
                pieces[i], word_ids[i], firsts[i], labels, capacity, spec.overlap, prefix, suffix
            )
        )
    return out


def _window_sentence(
    pieces: list[int],
    word_ids: list[int],
    first_pieces: list[int],
    labels: Sequence[int] | None,
    capacity: int,
    overlap: int,
    prefix: list[int],
    suffix: list[int],
) -> list[EncodedWindow]:
    if len(pieces) <= capacity:
        # Fast path (almost every sentence): one window that owns every word.
        windows = [(0, len(pieces))]
        owned = [list(range(len(first_pieces)))]
    else:
        windows = plan_windows(len(pieces), capacity, overlap)
        owned = [[] for _ in windows]
        for word, k in enumerate(assign_owners(first_pieces, windows)):
            owned[k].append(word)
    n_prefix = len(prefix)
    result: list[EncodedWindow] = []
    for k, (start, end) in enumerate(windows):
        input_ids = prefix + pieces[start:end] + suffix
        window_word_ids: list[int | None] = [None] * n_prefix
        window_word_ids.extend(word_ids[start:end])
        window_word_ids.extend([None] * len(suffix))
        window_labels = [IGNORE_INDEX] * len(input_ids)
        positions = [n_prefix + first_pieces[w] - start for w in owned[k]]
        if labels is not None:
            for w, pos in zip(owned[k], positions, strict=True):
                window_labels[pos] = int(labels[w])
        result.append(
            EncodedWindow(
                input_ids=input_ids,
                word_ids=window_word_ids,
                labels=window_labels,
                owned_words=owned[k],
                first_piece_positions=positions,
            )
        )
    return result


def encode_words(
    tokenizer: Any,
    words: Sequence[str],
    label_ids: Sequence[int] | None,
    spec: WindowSpec = WindowSpec(),  # noqa: B008 - immutable frozen dataclass
) -> list[EncodedWindow]:
    """Windows for one pre-split sentence; see :func:`encode_batch` (same rules, batch of one)."""
    return encode_batch(tokenizer, [words], None if label_ids is None else [label_ids], spec)[0]


def stitch(
    n_words: int, windows: Sequence[EncodedWindow], window_values: Sequence[Sequence[T]]
) -> list[T]:
    """Per-word values, in word order, from per-window values of owned words.

    ``window_values[k]`` is parallel to ``windows[k].owned_words``. Raises ``ValueError`` when a
    word is missing, predicted twice or out of range.
    """
    if len(windows) != len(window_values):
        raise ValueError(f"got values for {len(window_values)} windows, expected {len(windows)}")
    missing = object()
    result: list[Any] = [missing] * n_words
    for k, (window, values) in enumerate(zip(windows, window_values, strict=True)):
        if len(values) != len(window.owned_words):
            raise ValueError(
                f"window {k}: {len(values)} values for {len(window.owned_words)} owned words"
            )
        for word, value in zip(window.owned_words, values, strict=True):
            if not 0 <= word < n_words:
                raise ValueError(f"window {k}: word {word} out of range for {n_words} words")
            if result[word] is not missing:
                raise ValueError(f"word {word} is predicted twice (again by window {k})")
            result[word] = value
    absent = [w for w, v in enumerate(result) if v is missing]
    if absent:
        raise ValueError(f"{len(absent)} words have no prediction (first: word {absent[0]})")
    return result


def gather_first_pieces(window: EncodedWindow, piece_values: Sequence[T]) -> list[T]:
    """Values (e.g. logits rows) at the first piece of each owned word, parallel to owned_words.

    ``piece_values`` is indexed by position in ``window.input_ids``; right padding is allowed.
    """
    if len(piece_values) < len(window.input_ids):
        raise ValueError(
            f"got {len(piece_values)} piece values for a window of {len(window.input_ids)} pieces"
        )
    return [piece_values[p] for p in window.first_piece_positions]
