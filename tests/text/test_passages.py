"""Sentence-aligned passages with bounded wordpiece counts."""

from __future__ import annotations

import random

import pytest

from openmed_ray.models.backbones import load_tokenizer
from openmed_ray.text.passages import split_passages
from openmed_ray.text.tokenize import sentence_spans
from tests.conftest import synthetic_sentence


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone):
    return load_tokenizer(tiny_backbone)


def document(rng: random.Random, sentences: int) -> str:
    return " ".join(
        " ".join(synthetic_sentence(rng)[0]).capitalize() + "." for _ in range(sentences)
    )


def test_passages_stay_within_bounds_and_end_at_sentences(tokenizer):
    rng = random.Random(0)
    texts = [document(rng, n) for n in (3, 40, 120, 400)]
    results = split_passages(texts, tokenizer, min_wordpieces=50, max_wordpieces=256)
    assert results[0].passages == []  # about 30 wordpieces: too short for a passage
    assert results[0].dropped_wordpieces == results[0].wordpieces > 0
    for text, result in zip(texts[1:], results[1:], strict=True):
        assert len(result.passages) >= 1
        # Re-encoded on their own (special tokens included), passages count what was recorded.
        encoded = tokenizer([text[p.start : p.end] for p in result.passages])["input_ids"]
        assert [len(ids) for ids in encoded] == [p.n_wordpieces for p in result.passages]
        assert all(50 <= p.n_wordpieces <= 256 for p in result.passages)
        sentence_ends = {end for _, end in sentence_spans(text)}
        sentence_starts = {start for start, _ in sentence_spans(text)}
        assert all(p.start in sentence_starts and p.end in sentence_ends for p in result.passages)
        assert all(
            a.end < b.start for a, b in zip(result.passages, result.passages[1:], strict=False)
        )
    assert len(results[3].passages) > 4
    # Nothing but a possible short tail is dropped from long documents.
    assert results[3].dropped_wordpieces < 50


def test_a_sentence_longer_than_a_passage_is_cut_between_words(tokenizer):
    words = ["cisplatin", "heparin", "asthma", "aspirin"] * 60  # one 240-word sentence
    text = " ".join(words) + "."
    (result,) = split_passages([text], tokenizer, min_wordpieces=20, max_wordpieces=64)
    assert len(result.passages) > 3
    for passage in result.passages:
        assert 20 <= passage.n_wordpieces <= 64
        assert passage.start == 0 or text[passage.start - 1] == " "  # a word starts it
        assert text[passage.end - 1] != " " and (
            passage.end == len(text) or text[passage.end] in " ."
        )
    assert result.dropped_wordpieces == result.wordpieces - sum(
        p.n_wordpieces - 2 for p in result.passages
    )


def test_a_short_tail_joins_the_previous_passage(tokenizer):
    rng = random.Random(3)
    text = document(rng, 12)
    total = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    (whole,) = split_passages([text], tokenizer, min_wordpieces=10, max_wordpieces=total + 2)
    assert [(p.start, p.n_wordpieces) for p in whole.passages] == [(0, total + 2)]
    assert whole.dropped_wordpieces == 0
