"""Abbreviation definitions in running text: Schwartz & Hearst (PSB 2003).

    "... puromycin aminonucleoside (PAN) ..."      long form (short form)
    "... PAN (puromycin aminonucleoside) ..."      short form (long form), when the
                                                   parenthesis holds no short form

A short form has at most two words and ten characters, contains a letter and starts with
a letter or digit. Its long form is found among the min(|SF| + 5, 2 |SF|) words before the
parenthesis by matching the short form's characters right to left, the first one at the
start of a word. Definitions never cross a sentence boundary.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Abbreviation:
    short: str
    long: str
    short_start: int
    short_end: int
    long_start: int
    long_end: int


def _is_short_form(candidate: str) -> bool:
    return (
        0 < len(candidate) <= 10
        and len(candidate.split()) <= 2
        and any(c.isalpha() for c in candidate)
        and candidate[0].isalnum()
    )


def best_long_form(short: str, candidate: str) -> int | None:
    """Where the long form of `short` starts inside `candidate` (the words before it), or
    None: every alphanumeric of `short`, right to left, must appear in order, and its
    first character at the start of a word."""
    long_index = len(candidate) - 1
    for short_index in range(len(short) - 1, -1, -1):
        char = short[short_index].lower()
        if not char.isalnum():
            continue
        while long_index >= 0 and (
            candidate[long_index].lower() != char
            or (short_index == 0 and long_index > 0 and candidate[long_index - 1].isalnum())
        ):
            long_index -= 1
        if long_index < 0:
            return None
        long_index -= 1
    return candidate.rfind(" ", 0, long_index + 1) + 1


def _closing_paren(text: str, open_index: int, end: int) -> int | None:
    depth = 0
    for index in range(open_index, end):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return index
    return None


def _definition(text: str, short: tuple[int, int], before: tuple[int, int]) -> Abbreviation | None:
    """The definition of the short form text[short] among the words in text[before]."""
    short_text = text[short[0] : short[1]]
    words = list(_WORD.finditer(text, before[0], before[1]))
    max_words = min(len(short_text) + 5, 2 * len(short_text))
    if not words:
        return None
    window_start = words[-max_words:][0].start()
    window = text[window_start : before[1]].rstrip()
    offset = best_long_form(short_text, window)
    if offset is None:
        return None
    long_start = window_start + offset
    long_text = text[long_start : window_start + len(window)]
    if len(long_text) <= len(short_text) or short_text.lower() in long_text.lower().split():
        return None
    if len(long_text.split()) > max_words:
        return None
    return Abbreviation(short_text, long_text, *short, long_start, long_start + len(long_text))


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def find_abbreviations(text: str, sentences: Iterable[tuple[int, int]]) -> list[Abbreviation]:
    """Every abbreviation definition in `text`, sentence by sentence, in text order."""
    found: list[Abbreviation] = []
    for sentence_start, sentence_end in sentences:
        index = text.find("(", sentence_start, sentence_end)
        while index != -1:
            close = _closing_paren(text, index, sentence_end)
            if close is None:
                break
            inner_start, inner_end = _trimmed(text, index + 1, close)
            for separator in (";", ","):  # "(SF; see below)", "(SF, 1999)"
                position = text.find(separator, inner_start, inner_end)
                if position != -1:
                    inner_end = position
            inner_start, inner_end = _trimmed(text, inner_start, inner_end)
            inner = text[inner_start:inner_end]
            # A long form never reaches back over another parenthesis.
            previous = max(
                text.rfind(")", sentence_start, index), text.rfind("(", sentence_start, index)
            )
            words_start = max(sentence_start, previous + 1)
            if _is_short_form(inner):
                definition = _definition(text, (inner_start, inner_end), (words_start, index))
            elif inner:
                # "SF (long form)": the word right before the parenthesis is the short form.
                before = list(_WORD.finditer(text, words_start, index))
                definition = None
                if before:
                    word = before[-1]
                    if _is_short_form(word.group()):
                        reverse = _definition(text, word.span(), (inner_start, inner_end))
                        # Only a long form that spans the whole parenthesis counts.
                        if reverse is not None and reverse.long_start == inner_start:
                            definition = reverse
            else:
                definition = None
            if definition is not None:
                found.append(definition)
            index = text.find("(", close + 1, sentence_end)
    return found


def abbreviation_map(abbreviations: Iterable[Abbreviation]) -> dict[str, str]:
    """Short form -> long form; the first definition in a document wins."""
    mapping: dict[str, str] = {}
    for abbreviation in abbreviations:
        mapping.setdefault(abbreviation.short, abbreviation.long)
    return mapping
