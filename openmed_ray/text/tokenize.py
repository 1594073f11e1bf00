"""Word and sentence segmentation of raw text.

The benchmark corpora (BC2GM, BC5CDR, NCBI-disease, ... in their TSV form) use a NERsuite-like
tokenization: maximal runs of letters and digits form one token and every other non-space
character is a token on its own (``22 - oxacalcitriol``, ``H2 - receptor``). Raw documents are
pre-tokenized the same way at inference so the model sees words shaped like its training data.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from functools import cache

__all__ = ["word_spans", "sentence_spans"]

_MARK_CATEGORIES = frozenset({"Mn", "Mc", "Me"})


def _char_class(codepoints: list[int]) -> str:
    """Compress code points into a regex character-class body of escaped ranges."""
    parts: list[str] = []
    i = 0
    while i < len(codepoints):
        j = i
        while j + 1 < len(codepoints) and codepoints[j + 1] == codepoints[j] + 1:
            j += 1
        lo, hi = codepoints[i], codepoints[j]
        parts.append(f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}")
        i = j + 1
    return "".join(parts)


@cache
def _word_regex() -> re.Pattern[str]:
    # Python's ``\w`` does not include combining marks (Mn/Mc/Me), so ``[^\W_]+`` alone would cut
    # "e\u0301" into "e" + a lone accent. Build the mark class once, lazily (~0.3 s scan).
    marks = [
        cp
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp)) in _MARK_CATEGORIES and not chr(cp).isspace()
    ]
    # No ASCII char is a mark: the cheap lookahead skips the big class on ASCII-heavy text
    # (about 2x faster than testing the class at the end of every run).
    mark = rf"(?:(?=[^\x00-\x7f])[{_char_class(marks)}])"
    # 1: a letter/digit run with combining marks inside or after it; 2: marks with no base
    # (text start / after whitespace) plus what follows; 3: any other non-space char together
    # with marks decorating it (e.g. "-\u0301"). Letters/digits and marks are disjoint, so the
    # nested repetitions cannot backtrack.
    alnum = r"[^\W_]"
    return re.compile(rf"{alnum}+(?:{mark}+{alnum}*)*|{mark}+(?:{alnum}+{mark}*)*|\S{mark}*")


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character offsets ``(start, end)`` (end exclusive) of the words of ``text``.

    A word is a maximal run of unicode letters/digits (combining marks stay attached to their base
    character), or any other single non-whitespace character. The spans are sorted, disjoint,
    non-empty, contain no whitespace and cover every non-whitespace character exactly once.
    """
    return [m.span() for m in _word_regex().finditer(text)]


# Tokens (compared case-insensitively, without the final dot) whose period does not end a sentence.
_ABBREVIATIONS = frozenset(
    {
        "e.g",
        "i.e",
        "al",
        "cf",
        "ca",
        "approx",
        "fig",
        "figs",
        "eq",
        "eqs",
        "ref",
        "refs",
        "vs",
        "viz",
        "resp",
        "vol",
        "dr",
        "mr",
        "mrs",
        "ms",
        "prof",
        "st",
        "jr",
        "sr",
        "sp",
        "spp",
        "nos",
    }
)
# Case-sensitive: "No. 5" is an abbreviation, while "... the answer was no. Then" is not.
_ABBREVIATIONS_CASED = frozenset({"No"})

_OPENERS = frozenset("([{\"'\u2018\u201c\u00ab")
_LINE = re.compile(r"[^\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")
# Terminator(s), optional closing quotes/brackets, then whitespace; the lookahead captures the
# first character of the next sentence candidate.
_BOUNDARY = re.compile(r"[.?!]+[\"')\]}\u2019\u201d\u00bb]*(?=\s+(\S))")
_WORD_BEFORE_DOT = re.compile(r"[^\W\d_][\w.]*$")


def _is_abbreviation(prefix: str) -> bool:
    """Whether the token ending ``prefix`` (just before a '.') is a known abbreviation/initial."""
    m = _WORD_BEFORE_DOT.search(prefix)
    if m is None:
        return False
    token = m.group().strip(".")
    if not token:
        return False
    if token in _ABBREVIATIONS_CASED or token.lower() in _ABBREVIATIONS:
        return True
    # Single capital initials ("J. Smith") and dotted initials ("U.S. Army").
    parts = token.split(".")
    return all(len(p) == 1 and p.isalpha() for p in parts) and parts[0].isupper()


def _starts_sentence(ch: str) -> bool:
    return ch.isupper() or ch.istitle() or ch.isdigit() or ch in _OPENERS


def _append_trimmed(text: str, start: int, end: int, out: list[tuple[int, int]]) -> None:
    piece = text[start:end]
    stripped = piece.lstrip()
    if not stripped:
        return
    start += len(piece) - len(stripped)
    end = start + len(stripped.rstrip())
    out.append((start, end))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Rule-based sentence offsets ``(start, end)`` (end exclusive) for long documents.

    Splits at every line break and after ``.``/``?``/``!`` (plus closing quotes/brackets) that is
    followed by whitespace and an uppercase letter, digit or opening bracket, unless the period
    belongs to a common abbreviation (``e.g.``, ``et al.``, ``Fig.``, ``vs.``, ``J.``, ...).
    Spans are trimmed of whitespace, non-empty, sorted, disjoint, and every non-whitespace
    character lies in exactly one span.
    """
    spans: list[tuple[int, int]] = []
    for line in _LINE.finditer(text):
        line_start, line_end = line.span()
        start = line_start
        for m in _BOUNDARY.finditer(text, line_start, line_end):
            if not _starts_sentence(m.group(1)):
                continue
            terminator = m.group().rstrip("\"')]}\u2019\u201d\u00bb")
            # Only the tail matters for the abbreviation check; bounding it keeps this linear.
            tail = text[max(start, m.start() - 32) : m.start()]
            if set(terminator) == {"."} and _is_abbreviation(tail):
                continue
            _append_trimmed(text, start, m.end(), spans)
            start = m.end()
        _append_trimmed(text, start, line_end, spans)
    return spans


def chunk_spans(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Consecutive sentences grouped into chunks of at most `max_chars` characters.

    For pipelines with a document length limit (spaCy's `nlp.max_length`) or memory that
    grows with length. Chunks cover every sentence, never split one unless it alone exceeds
    `max_chars` (then it is cut at the last whitespace before the limit, or at the limit).
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    chunks: list[tuple[int, int]] = []
    for start, end in sentence_spans(text):
        while end - start > max_chars:  # one over-long sentence: cut it
            cut = text.rfind(" ", start + 1, start + max_chars + 1)
            cut = cut if cut > start else start + max_chars
            chunks.append((start, cut))
            start = cut
            while start < end and text[start].isspace():
                start += 1
        if start >= end:
            continue
        if chunks and end - chunks[-1][0] <= max_chars:
            chunks[-1] = (chunks[-1][0], end)
        else:
            chunks.append((start, end))
    return chunks
