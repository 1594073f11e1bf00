"""BIO decoding, cross-checked against seqeval."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics.sequence_labeling import get_entities

from openmed_ray.text import (
    bio_to_spans,
    tags_to_char_entities,
    word_spans,
    word_spans_to_char_spans,
)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([], []),
        (["O", "O"], []),
        (["B-Gene", "I-Gene", "O", "B-Chem"], [(0, 2, "Gene"), (3, 4, "Chem")]),
        (["I-Gene", "I-Gene", "O"], [(0, 2, "Gene")]),  # I- at the start opens a chunk
        (["O", "I-Gene", "O", "I-Gene"], [(1, 2, "Gene"), (3, 4, "Gene")]),  # I- after O
        (["B-Gene", "I-Chem", "I-Chem"], [(0, 1, "Gene"), (1, 3, "Chem")]),  # type switch
        (["B-Gene", "B-Gene", "I-Gene"], [(0, 1, "Gene"), (1, 3, "Gene")]),
        (["B-X", "I-Y", "B-Y", "I-X"], [(0, 1, "X"), (1, 2, "Y"), (2, 3, "Y"), (3, 4, "X")]),
        (["B-Gene-or-protein", "I-Gene-or-protein"], [(0, 2, "Gene-or-protein")]),
        (["O", "B-Disease"], [(1, 2, "Disease")]),
    ],
)
def test_bio_to_spans_examples(tags: list[str], expected: list[tuple[int, int, str]]) -> None:
    assert bio_to_spans(tags) == expected


@pytest.mark.parametrize("bad", ["X", "B", "B-", "E-Gene", "S-Gene", "b-Gene", ""])
def test_invalid_tags_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="expected 'O', 'B-<type>' or 'I-<type>'"):
        bio_to_spans(["O", bad])


tag_lists = st.lists(
    st.sampled_from(["O", "B-Gene", "I-Gene", "B-Chem", "I-Chem", "B-A-B", "I-A-B"]), max_size=40
)


@settings(max_examples=100, deadline=None)
@given(tag_lists)
def test_bio_to_spans_matches_seqeval(tags: list[str]) -> None:
    expected = [(start, end + 1, label) for label, start, end in get_entities(list(tags))]
    assert sorted(bio_to_spans(tags)) == sorted(expected)
    # Spans come out sorted and disjoint.
    spans = bio_to_spans(tags)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_word_spans_to_char_spans() -> None:
    offsets = [(0, 2), (2, 3), (3, 4), (5, 13)]
    assert word_spans_to_char_spans(offsets, [(0, 3, "Gene"), (3, 4, "X")]) == [
        (0, 4, "Gene"),
        (5, 13, "X"),
    ]
    with pytest.raises(ValueError, match="invalid for 4 words"):
        word_spans_to_char_spans(offsets, [(2, 5, "Gene")])
    with pytest.raises(ValueError, match="invalid for 4 words"):
        word_spans_to_char_spans(offsets, [(2, 2, "Gene")])


def test_tags_to_char_entities_example() -> None:
    text = "The IL-2 receptor (p55) binds aspirin."
    offsets = word_spans(text)
    words = [text[s:e] for s, e in offsets]
    assert words == ["The", "IL", "-", "2", "receptor", "(", "p55", ")", "binds", "aspirin", "."]
    tags = ["O", "B-Gene", "I-Gene", "I-Gene", "I-Gene", "O", "B-Gene", "O", "O", "B-Chem", "O"]
    assert tags_to_char_entities(text, offsets, tags) == [
        {"start": 4, "end": 17, "label": "Gene", "text": "IL-2 receptor"},
        {"start": 19, "end": 22, "label": "Gene", "text": "p55"},
        {"start": 30, "end": 37, "label": "Chem", "text": "aspirin"},
    ]
    with pytest.raises(ValueError, match="got 1 tags for 11 words"):
        tags_to_char_entities(text, offsets, ["O"])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=6),
            st.sampled_from([" ", "", "\t", "\n ", "\u00a0"]),
        ),
        max_size=25,
    ),
    st.data(),
)
def test_char_entities_slice_the_text(parts: list[tuple[str, str]], data: st.DataObject) -> None:
    text = "".join(chunk + sep for chunk, sep in parts)
    offsets = word_spans(text)
    tag = st.sampled_from(["O", "B-Gene", "I-Gene", "B-Chem"])
    tags = data.draw(st.lists(tag, min_size=len(offsets), max_size=len(offsets)))
    entities = tags_to_char_entities(text, offsets, tags)
    spans = bio_to_spans(tags)
    assert len(entities) == len(spans)
    for entity, (start, end, label) in zip(entities, spans, strict=True):
        assert entity["text"] == text[entity["start"] : entity["end"]]
        assert entity["start"] == offsets[start][0] and entity["end"] == offsets[end - 1][1]
        assert entity["label"] == label
        assert entity["text"] == entity["text"].strip()
