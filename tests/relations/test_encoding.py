"""Entity markers around every mention, windows for long documents, pair labels."""

import pytest
from transformers import BertTokenizerFast

from openmed_ray.relations.encoding import MARKER, encode_documents, marker_id
from openmed_ray.relations.examples import (
    CID_TASK,
    LinkedMention,
    RelationDataError,
    RelationDocument,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone):
    return BertTokenizerFast.from_pretrained(str(tiny_backbone))


def mention(text: str, surface: str, kind: str, key: str, nth: int = 0) -> LinkedMention:
    start = -1
    for _ in range(nth + 1):
        start = text.index(surface, start + 1)
    return LinkedMention(start, start + len(surface), kind, key)


def test_markers_wrap_each_mention_and_pairs_carry_gold_labels(tokenizer):
    text = "aspirin was given . the patient had severe fever and gout ."
    document = RelationDocument(
        "d1",
        text,
        [
            mention(text, "aspirin", "Chemical", "C1"),
            mention(text, "fever", "Disease", "D1"),
            mention(text, "gout", "Disease", "D2"),
        ],
        {("C1", "D2"): "CID"},
    )
    [encoded] = encode_documents(tokenizer, [document], CID_TASK, labeled=True)
    star = marker_id(tokenizer)
    [window] = encoded.windows
    tokens = tokenizer.convert_ids_to_tokens(window)
    assert tokens[:4] == ["[CLS]", MARKER, "aspirin", MARKER]
    assert tokens.count(MARKER) == 6
    for position in encoded.mention_position:
        assert window[position] == star
    assert tokens[encoded.mention_position[1] + 1] == "fever"
    assert encoded.entities == [("Chemical", "C1"), ("Disease", "D1"), ("Disease", "D2")]
    assert encoded.pairs == [(0, 1), (0, 2)]
    assert encoded.labels == [0, 1]


def test_a_long_document_is_windowed_without_losing_a_mention(tokenizer):
    words = ["the patient had fever ."] * 40 + ["aspirin was given ."]
    text = " ".join(words)
    mentions = [mention(text, "fever", "Disease", "D1", nth) for nth in range(40)]
    mentions.append(mention(text, "aspirin", "Chemical", "C1"))
    document = RelationDocument("long", text, mentions)
    [encoded] = encode_documents(tokenizer, [document], CID_TASK, max_length=64, overlap=16)
    assert len(encoded.windows) > 3 and all(len(w) <= 64 for w in encoded.windows)
    star = marker_id(tokenizer)
    assert len(encoded.mention_window) == 41
    for window, position in zip(encoded.mention_window, encoded.mention_position, strict=True):
        assert encoded.windows[window][position] == star
    # The last mention (aspirin) is read from the last window.
    assert encoded.mention_window[-1] == len(encoded.windows) - 1
    assert encoded.pairs == [(1, 0)] and encoded.labels is None


def test_a_mention_on_whitespace_and_a_missing_marker_are_clear_errors(tokenizer, tmp_path):
    text = "aspirin   fever"
    document = RelationDocument("d2", text, [LinkedMention(7, 9, "Chemical", "C1")])
    with pytest.raises(RelationDataError, match="document d2: mention 7..9 .* covers no wordpiece"):
        encode_documents(tokenizer, [document], CID_TASK)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"]) + "\n")
    without_marker = BertTokenizerFast(vocab=str(vocab))
    with pytest.raises(RelationDataError, match="entity marker"):
        marker_id(without_marker)


def test_each_mention_knows_its_sentence(tokenizer):
    text = "Aspirin was given. The patient had fever. Then gout and fever."
    document = RelationDocument(
        "d2",
        text,
        [
            mention(text, "Aspirin", "Chemical", "C1"),
            mention(text, "fever", "Disease", "D1"),
            mention(text, "gout", "Disease", "D2"),
            mention(text, "fever", "Disease", "D1", nth=1),
        ],
    )
    [encoded] = encode_documents(tokenizer, [document], CID_TASK)
    assert encoded.mention_sentence == [0, 1, 2, 2]
