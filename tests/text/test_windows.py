"""Wordpiece windows, ownership and stitching."""

from __future__ import annotations

import itertools
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openmed_ray.text import (
    IGNORE_INDEX,
    EncodedWindow,
    WindowSpec,
    assign_owners,
    encode_batch,
    encode_words,
    gather_first_pieces,
    plan_windows,
    stitch,
)

# ---------------------------------------------------------------------------------------------
# Pure functions, with a fake word -> piece-count model (no tokenizer needed).


@st.composite
def window_problems(draw: st.DrawFn) -> tuple[list[int], int, int]:
    pieces_per_word = draw(st.lists(st.integers(1, 5), max_size=400))
    capacity = draw(st.integers(8, 60))
    overlap = draw(st.integers(0, capacity - 1))
    return pieces_per_word, capacity, overlap


def _first_pieces(pieces_per_word: list[int]) -> list[int]:
    return [0, *itertools.accumulate(pieces_per_word)][:-1]


def _fake_windows(
    pieces_per_word: list[int], capacity: int, overlap: int
) -> tuple[list[tuple[int, int]], list[int], list[EncodedWindow]]:
    """Windows of a fake sentence, shaped like encode_words output with a 1+1 special layout."""
    n_pieces = sum(pieces_per_word)
    first = _first_pieces(pieces_per_word)
    windows = plan_windows(n_pieces, capacity, overlap)
    owners = assign_owners(first, windows)
    encoded = []
    for k, (start, end) in enumerate(windows):
        owned = [w for w, o in enumerate(owners) if o == k]
        encoded.append(
            EncodedWindow(
                input_ids=[0] * (end - start + 2),
                word_ids=[None] * (end - start + 2),
                labels=[IGNORE_INDEX] * (end - start + 2),
                owned_words=owned,
                first_piece_positions=[1 + first[w] - start for w in owned],
            )
        )
    return windows, owners, encoded


def test_window_spec_validation() -> None:
    assert WindowSpec() == WindowSpec(max_length=256, overlap=50)
    assert WindowSpec().capacity(2) == 254
    with pytest.raises(ValueError, match="overlap must be >= 0"):
        WindowSpec(overlap=-1)
    with pytest.raises(ValueError, match="must be smaller than max_length"):
        WindowSpec(max_length=10, overlap=10)
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        WindowSpec(max_length=0, overlap=0)
    with pytest.raises(ValueError, match="must exceed overlap"):
        WindowSpec(max_length=12, overlap=10).capacity(2)


def test_plan_windows_examples() -> None:
    assert plan_windows(0, 10, 2) == [(0, 0)]
    assert plan_windows(10, 10, 2) == [(0, 10)]
    assert plan_windows(11, 10, 2) == [(0, 10), (1, 11)]
    assert plan_windows(20, 10, 2) == [(0, 10), (8, 18), (10, 20)]
    assert plan_windows(30, 10, 0) == [(0, 10), (10, 20), (20, 30)]
    for bad in [(-1, 10, 2), (5, 0, 0), (5, 10, 10), (5, 10, -1)]:
        with pytest.raises(ValueError):
            plan_windows(*bad)


def test_assign_owners_prefers_most_central_then_earlier() -> None:
    windows = [(0, 10), (6, 16)]
    # piece 7: margins min(7, 2)=2 vs min(1, 8)=1 -> window 0; piece 8: 1 vs 2 -> window 1.
    assert assign_owners([7, 8], windows) == [0, 1]
    # Piece 5 of [(0, 10), (1, 11)] has margin 4 in both: the earlier window wins.
    assert assign_owners([5, 6], [(0, 10), (1, 11)]) == [0, 1]
    assert assign_owners([2, 2], [(0, 5), (0, 5)]) == [0, 0]
    # Unsorted/nested windows are handled too.
    assert assign_owners([2, 0], [(1, 4), (0, 5)]) == [1, 1]
    assert assign_owners([3], [(2, 5), (0, 8)]) == [1]
    with pytest.raises(ValueError, match="not inside any window"):
        assign_owners([12], [(0, 10)])


@settings(max_examples=100, deadline=None)
@given(window_problems())
def test_plan_windows_properties(problem: tuple[list[int], int, int]) -> None:
    pieces_per_word, capacity, overlap = problem
    n_pieces = sum(pieces_per_word)
    windows = plan_windows(n_pieces, capacity, overlap)
    assert windows[0][0] == 0
    assert windows[-1][1] == n_pieces
    if n_pieces <= capacity:
        assert windows == [(0, n_pieces)]
    else:
        assert all(end - start == capacity for start, end in windows)
    for (s0, e0), (s1, e1) in itertools.pairwise(windows):
        assert s0 < s1 and e0 < e1
        assert e0 - s1 >= overlap  # consecutive windows share at least `overlap` pieces
    covered = set()
    for start, end in windows:
        covered.update(range(start, end))
    assert covered == set(range(n_pieces))


@settings(max_examples=100, deadline=None)
@given(window_problems())
def test_owner_is_most_central_window(problem: tuple[list[int], int, int]) -> None:
    pieces_per_word, capacity, overlap = problem
    windows, owners, _ = _fake_windows(pieces_per_word, capacity, overlap)
    assert len(owners) == len(pieces_per_word)
    for piece, owner in zip(_first_pieces(pieces_per_word), owners, strict=True):
        margins = [min(piece - s, e - 1 - piece) if s <= piece < e else -1 for s, e in windows]
        assert margins[owner] >= 0
        assert owner == margins.index(max(margins))  # max margin, earliest on ties


@settings(max_examples=100, deadline=None)
@given(window_problems(), st.randoms(use_true_random=False))
def test_stitch_inverts_split(problem: tuple[list[int], int, int], rnd: Any) -> None:
    pieces_per_word, capacity, overlap = problem
    n_words = len(pieces_per_word)
    _, _, encoded = _fake_windows(pieces_per_word, capacity, overlap)
    owned = sorted(w for window in encoded for w in window.owned_words)
    assert owned == list(range(n_words))  # every word predicted exactly once
    values = [rnd.randint(0, 10**6) for _ in range(n_words)]
    per_window = [[values[w] for w in window.owned_words] for window in encoded]
    assert stitch(n_words, encoded, per_window) == values
    # Same through per-piece values, the way model outputs come back.
    per_piece = []
    for window in encoded:
        row: list[int | None] = [None] * len(window.input_ids)
        for w, pos in zip(window.owned_words, window.first_piece_positions, strict=True):
            row[pos] = values[w]
        per_piece.append(gather_first_pieces(window, row))
    assert stitch(n_words, encoded, per_piece) == values


def _window(owned: list[int]) -> EncodedWindow:
    return EncodedWindow(
        input_ids=[0] * (len(owned) + 2),
        word_ids=[None] * (len(owned) + 2),
        labels=[IGNORE_INDEX] * (len(owned) + 2),
        owned_words=owned,
        first_piece_positions=list(range(1, len(owned) + 1)),
    )


def test_stitch_errors_and_empty() -> None:
    assert stitch(0, [_window([])], [[]]) == []
    assert stitch(3, [_window([0, 2]), _window([1])], [["a", "c"], ["b"]]) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="no prediction"):
        stitch(3, [_window([0, 2])], [["a", "c"]])
    with pytest.raises(ValueError, match="predicted twice"):
        stitch(2, [_window([0, 1]), _window([1])], [["a", "b"], ["b"]])
    with pytest.raises(ValueError, match="out of range"):
        stitch(1, [_window([0, 1])], [["a", "b"]])
    with pytest.raises(ValueError, match="values for 1 owned words"):
        stitch(1, [_window([0])], [["a", "b"]])
    with pytest.raises(ValueError, match="values for 2 windows"):
        stitch(1, [_window([0])], [["a"], []])


def test_gather_first_pieces_allows_padding() -> None:
    window = _window([4, 5])
    assert gather_first_pieces(window, ["cls", "x", "y", "sep", "pad"]) == ["x", "y"]
    with pytest.raises(ValueError, match="piece values"):
        gather_first_pieces(window, ["cls", "x"])


# ---------------------------------------------------------------------------------------------
# A real (tiny, offline) BERT WordPiece fast tokenizer.

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "the",
    "gene",
    "cell",
    "protein",
    *string.ascii_lowercase,
    *string.digits,
    *(f"##{c}" for c in string.ascii_lowercase + string.digits),
    "-",
    "(",
    ")",
    ".",
    ",",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import BertTokenizerFast

    path: Path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(path))
    if len(tok.get_vocab()) != len(VOCAB):  # transformers 5 takes the vocabulary as `vocab`
        tok = BertTokenizerFast(vocab=str(path))
    assert tok.is_fast and len(tok.get_vocab()) == len(VOCAB)
    return tok


def _piece_counts(tokenizer: Any, words: list[str]) -> list[int]:
    return [len(tokenizer.tokenize(w)) for w in words]


def _check_windows(
    tokenizer: Any,
    words: list[str],
    labels: list[int] | None,
    windows: list[EncodedWindow],
    spec: WindowSpec,
) -> None:
    all_pieces = tokenizer.convert_tokens_to_ids([p for w in words for p in tokenizer.tokenize(w)])
    seen: list[int] = []
    for window in windows:
        ids = window.input_ids
        assert len(ids) <= spec.max_length
        assert len(ids) == len(window.word_ids) == len(window.labels)
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert window.word_ids[0] is None and window.word_ids[-1] is None
        assert None not in window.word_ids[1:-1]
        # Content is a contiguous slice of the sentence's pieces.
        content = ids[1:-1]
        offsets = [
            i
            for i in range(len(all_pieces) - len(content) + 1)
            if all_pieces[i : i + len(content)] == content
        ]
        assert offsets, "window content is not a slice of the sentence"
        labelled = [i for i, lab in enumerate(window.labels) if lab != IGNORE_INDEX]
        if labels is None:
            assert labelled == []
        else:
            assert labelled == window.first_piece_positions
            assert [window.labels[p] for p in labelled] == [labels[w] for w in window.owned_words]
        for w, pos in zip(window.owned_words, window.first_piece_positions, strict=True):
            assert window.word_ids[pos] == w
            # `pos` is the word's first piece: the previous piece belongs to another word.
            assert window.word_ids[pos - 1] != w
        assert window.owned_words == sorted(window.owned_words)
        seen.extend(window.owned_words)
    assert sorted(seen) == list(range(len(words)))


def _long_sentence(n_words: int) -> list[str]:
    pool = ["the", "gene", "cell", "protein", "il", "-", "2", "p55", "abc", "x", "zq9k", "(", ")"]
    return [pool[(i * 7) % len(pool)] for i in range(n_words)]


def test_long_sentence_is_windowed(tokenizer: Any) -> None:
    words = _long_sentence(700)
    labels = [i % 5 for i in range(len(words))]
    spec = WindowSpec()
    windows = encode_words(tokenizer, words, labels, spec)
    n_pieces = sum(_piece_counts(tokenizer, words))
    assert n_pieces > 2 * spec.max_length
    assert len(windows) == len(plan_windows(n_pieces, spec.max_length - 2, spec.overlap)) > 2
    assert all(len(w.input_ids) == spec.max_length for w in windows)
    _check_windows(tokenizer, words, labels, windows, spec)
    stitched = stitch(len(words), windows, [gather_first_pieces(w, w.labels) for w in windows])
    assert stitched == labels


def test_short_and_empty_sentences(tokenizer: Any) -> None:
    (window,) = encode_words(tokenizer, ["the", "protein", "abc"], [1, 2, 3])
    assert window.input_ids == [
        tokenizer.cls_token_id,
        *tokenizer.convert_tokens_to_ids(["the", "protein", "a", "##b", "##c"]),
        tokenizer.sep_token_id,
    ]
    assert window.word_ids == [None, 0, 1, 2, 2, 2, None]
    assert window.labels == [IGNORE_INDEX, 1, 2, 3, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    assert window.owned_words == [0, 1, 2] and window.first_piece_positions == [1, 2, 3]

    (empty,) = encode_words(tokenizer, [], [])
    assert empty.input_ids == [tokenizer.cls_token_id, tokenizer.sep_token_id]
    assert empty.owned_words == [] and empty.labels == [IGNORE_INDEX] * 2
    assert stitch(0, [empty], [gather_first_pieces(empty, empty.labels)]) == []


def test_labels_none_still_assigns_owners(tokenizer: Any) -> None:
    words = _long_sentence(40)
    spec = WindowSpec(max_length=16, overlap=4)
    windows = encode_words(tokenizer, words, None, spec)
    assert len(windows) > 1
    _check_windows(tokenizer, words, None, windows, spec)


def test_words_without_pieces_become_unk(tokenizer: Any) -> None:
    # "" and a zero-width space vanish in BERT's normalizer; each must keep one position.
    words = ["gene", "", "\u200b", "cell", " "]
    (window,) = encode_words(tokenizer, words, [1, 2, 3, 4, 5])
    unk = tokenizer.unk_token_id
    assert window.input_ids[1:-1] == [
        tokenizer.convert_tokens_to_ids("gene"),
        unk,
        unk,
        tokenizer.convert_tokens_to_ids("cell"),
        unk,
    ]
    assert window.owned_words == [0, 1, 2, 3, 4]
    assert window.labels[1:-1] == [1, 2, 3, 4, 5]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(
            st.sampled_from(
                ["the", "gene", "protein", "abc", "il", "-", "2", "zq9k", "", "\u200b"]
            ),
            max_size=60,
        ),
        max_size=5,
    ),
    st.integers(6, 40),
    st.data(),
)
def test_encode_batch_equals_encode_words(
    tokenizer: Any, sentences: list[list[str]], max_length: int, data: st.DataObject
) -> None:
    spec = WindowSpec(max_length=max_length, overlap=data.draw(st.integers(0, max_length - 3)))
    labels = [[(7 * i + j) % 9 for j in range(len(s))] for i, s in enumerate(sentences)]
    batch = encode_batch(tokenizer, sentences, labels, spec)
    assert batch == [
        encode_words(tokenizer, s, lab, spec) for s, lab in zip(sentences, labels, strict=True)
    ]
    for words, lab, windows in zip(sentences, labels, batch, strict=True):
        assert (
            stitch(len(words), windows, [gather_first_pieces(w, w.labels) for w in windows]) == lab
        )


class _CountingTokenizer:
    """Delegating proxy that counts tokenizer calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_encode_batch_calls_tokenizer_once(tokenizer: Any) -> None:
    counting = _CountingTokenizer(tokenizer)
    sentences = [_long_sentence(n) for n in (0, 3, 300, 17)]
    encode_batch(counting, sentences, None)  # first use also probes the special-token layout
    counting.calls = 0
    encode_batch(counting, sentences, None)
    assert counting.calls == 1


def test_non_bert_special_token_layout() -> None:
    # A RoBERTa-like template with two leading specials: nothing may assume [CLS] ... [SEP].
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "<lang>": 4, "the": 5, "gene": 6}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> <lang> $A </s>", special_tokens=[("<s>", 2), ("<lang>", 4), ("</s>", 3)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    windows = encode_words(
        tok, ["the", "gene", "x", "the", "gene"], [1, 2, 3, 4, 5], WindowSpec(6, 1)
    )
    assert [w.input_ids for w in windows] == [[2, 4, 5, 6, 1, 3], [2, 4, 1, 5, 6, 3]]
    assert [w.word_ids for w in windows] == [
        [None, None, 0, 1, 2, None],
        [None, None, 2, 3, 4, None],
    ]
    assert [w.owned_words for w in windows] == [[0, 1, 2], [3, 4]]
    assert [w.first_piece_positions for w in windows] == [[2, 3, 4], [3, 4]]
    assert windows[1].labels == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 4, 5, IGNORE_INDEX]


def test_slow_tokenizer_rejected() -> None:
    class SlowTokenizer:
        is_fast = False

    with pytest.raises(ValueError, match="fast .*tokenizer is needed for word alignment"):
        encode_words(SlowTokenizer(), ["the"], [0])


def test_label_length_mismatch_and_tiny_capacity(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="2 labels for 1 words"):
        encode_words(tokenizer, ["the"], [0, 1])
    with pytest.raises(ValueError, match="1 label sequences for 2 sentences"):
        encode_batch(tokenizer, [["the"], ["gene"]], [[0]], WindowSpec())
    with pytest.raises(ValueError, match="must exceed overlap"):
        encode_words(tokenizer, ["the"], None, WindowSpec(max_length=4, overlap=2))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(1, 15)), min_size=1, max_size=6),
    st.data(),
)
def test_assign_owners_matches_brute_force_on_any_windows(
    raw: list[tuple[int, int]], data: st.DataObject
) -> None:
    windows = [(s, s + size) for s, size in raw]
    inside = sorted({p for s, e in windows for p in range(s, e)})
    pieces = data.draw(st.lists(st.sampled_from(inside), max_size=20))
    owners = assign_owners(pieces, windows)
    for piece, owner in zip(pieces, owners, strict=True):
        margins = [min(piece - s, e - 1 - piece) if s <= piece < e else -1 for s, e in windows]
        assert owner == margins.index(max(margins))
