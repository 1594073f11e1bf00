"""Word and sentence segmentation of raw text."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openmed_ray.text import sentence_spans, word_spans

SPECIAL_STRINGS = [
    " ",
    "\t",
    "\n",
    "\r\n",
    "\u00a0",
    "\u2028",
    "\u200b",
    "e\u0301",
    "\u0301",
    "\u0915\u093f",  # Devanagari KA + vowel sign I (Mc)
    "\u20dd",  # enclosing circle (Me)
    "\U0001f600",
    "\U0001f44d\U0001f3fd",
    "\u65e5\u672c\u8a9e",
    "IL-2",
    "p55",
    "a_b",
    "22-oxacalcitriol",
    "e.g.",
    "et al.",
    "Fig. 2",
    ". The",
    "! A",
    "? (",
    "\n\n",
    "J. Smith",
]

any_char = st.characters(exclude_categories=("Cs",))
texts = st.lists(
    st.one_of(st.text(alphabet=any_char, max_size=8), st.sampled_from(SPECIAL_STRINGS))
)
texts = texts.map("".join)


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch) in ("Mn", "Mc", "Me")


def _words(text: str) -> list[str]:
    return [text[s:e] for s, e in word_spans(text)]


def _assert_partition(text: str, spans: list[tuple[int, int]], inner_space: bool = False) -> None:
    """Sorted, disjoint, non-empty spans covering each non-whitespace char exactly once.

    Whitespace is never covered, unless ``inner_space`` (sentences contain spaces).
    """
    covered = [0] * len(text)
    prev_end = 0
    for start, end in spans:
        assert prev_end <= start < end <= len(text)
        prev_end = end
        for i in range(start, end):
            covered[i] += 1
    for i, ch in enumerate(text):
        if ch.isspace():
            assert covered[i] <= (1 if inner_space else 0), (i, ch)
        else:
            assert covered[i] == 1, (i, ch)


@settings(max_examples=150, deadline=None)
@given(texts)
def test_word_spans_partition_non_whitespace(text: str) -> None:
    spans = word_spans(text)
    _assert_partition(text, spans)
    for start, end in spans:
        assert not any(ch.isspace() for ch in text[start:end])
        token = text[start:end]
        # Either one run of letters/digits (+ marks), or a single other char (+ its marks).
        base = [ch for ch in token if not _is_mark(ch)]
        if len(base) > 1:
            assert all(ch.isalnum() for ch in base), token


@settings(max_examples=150, deadline=None)
@given(texts)
def test_combining_marks_stay_with_their_base(text: str) -> None:
    spans = word_spans(text)
    span_of = {}
    for k, (start, end) in enumerate(spans):
        for i in range(start, end):
            span_of[i] = k
    for i, ch in enumerate(text):
        if _is_mark(ch) and i > 0 and not text[i - 1].isspace():
            assert span_of[i] == span_of[i - 1], (text, i)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IL-2 receptor (p55)", ["IL", "-", "2", "receptor", "(", "p55", ")"]),
        ("22-oxacalcitriol", ["22", "-", "oxacalcitriol"]),
        ("H2-receptor antagonists.", ["H2", "-", "receptor", "antagonists", "."]),
        ("a_b", ["a", "_", "b"]),
        ("caf\u00e9 cafe\u0301", ["caf\u00e9", "cafe\u0301"]),
        ("x -\u0301y", ["x", "-\u0301", "y"]),
        ("\u0915\u093f\u0924\u093e\u092c", ["\u0915\u093f\u0924\u093e\u092c"]),
        ("\u65e5\u672c\u8a9e\u3002", ["\u65e5\u672c\u8a9e", "\u3002"]),
        ("a\u00a0b\tc\nd", ["a", "b", "c", "d"]),
        ("\U0001f600ok", ["\U0001f600", "ok"]),
        ("  \n\t ", []),
        ("", []),
    ],
)
def test_word_spans_examples(text: str, expected: list[str]) -> None:
    assert _words(text) == expected


def _sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in sentence_spans(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "IL-2 binds its receptor. The complex signals! Does it? Yes.",
            ["IL-2 binds its receptor.", "The complex signals!", "Does it?", "Yes."],
        ),
        (
            "Drugs, e.g. aspirin, i.e. ASA. As shown by Smith et al. It was approx. 5 mg.",
            ["Drugs, e.g. aspirin, i.e. ASA.", "As shown by Smith et al. It was approx. 5 mg."],
        ),
        (
            "See Fig. 2 and Dr. Who vs. Mr. Xu. No. 5 was J. Smith. Then 3.5 mg was given.",
            ["See Fig. 2 and Dr. Who vs. Mr. Xu.", "No. 5 was J. Smith.", "Then 3.5 mg was given."],
        ),
        (
            "It rose (p < 0.05). (A second) sentence. 12 patients died.",
            ["It rose (p < 0.05).", "(A second) sentence.", "12 patients died."],
        ),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("lower. case stays together.", ["lower. case stays together."]),
        (
            "Title line\nFirst sentence\n\n  Second para.  ",
            ["Title line", "First sentence", "Second para."],
        ),
        ("   \n\n ", []),
        ("", []),
    ],
)
def test_sentence_examples(text: str, expected: list[str]) -> None:
    assert _sentences(text) == expected


sentence_texts = st.lists(
    st.one_of(
        st.sampled_from(
            SPECIAL_STRINGS + [". ", "? ", "!) ", "Fig. ", "e.g. ", "No. ", "A. ", "x"]
        ),
        st.text(alphabet=st.sampled_from("aZ1 .?!\n\t()\"'\u00a0\u2029"), max_size=10),
        st.text(alphabet=any_char, max_size=4),
    )
).map("".join)


@settings(max_examples=150, deadline=None)
@given(sentence_texts)
def test_sentence_spans_partition_non_whitespace(text: str) -> None:
    spans = sentence_spans(text)
    _assert_partition(text, spans, inner_space=True)
    for start, end in spans:
        assert not text[start].isspace() and not text[end - 1].isspace()
