import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openmed_ray.text.decoding import BioDecoder, transition_mask

LABELS = ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]


def log_probs(rows):
    probs = np.asarray(rows, dtype=np.float64)
    return np.log(probs / probs.sum(axis=1, keepdims=True))


def is_valid(tags):
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def test_transition_mask():
    allowed, start = transition_mask(LABELS)
    assert not start[LABELS.index("I-Chemical")]
    assert allowed[LABELS.index("B-Chemical"), LABELS.index("I-Chemical")]
    assert not allowed[LABELS.index("O"), LABELS.index("I-Chemical")]
    assert not allowed[LABELS.index("I-Disease"), LABELS.index("I-Chemical")]


def test_viterbi_repairs_a_stray_inside_tag_that_argmax_keeps():
    # word 2 prefers I-Chemical after O: argmax keeps the invalid tag.
    scores = log_probs(
        [
            [0.9, 0.05, 0.01, 0.02, 0.02],
            [0.2, 0.35, 0.4, 0.03, 0.02],
            [0.9, 0.02, 0.04, 0.02, 0.02],
        ]
    )
    assert BioDecoder(LABELS, "argmax").decode_tags(scores) == ["O", "I-Chemical", "O"]
    assert BioDecoder(LABELS, "viterbi").decode_tags(scores) == ["O", "B-Chemical", "O"]


def test_viterbi_equals_argmax_when_argmax_is_valid():
    scores = log_probs([[0.1, 0.8, 0.05, 0.03, 0.02], [0.1, 0.05, 0.8, 0.03, 0.02]])
    assert BioDecoder(LABELS).decode_tags(scores) == ["B-Chemical", "I-Chemical"]
    assert BioDecoder(LABELS).decode(np.zeros((0, 5))) == []


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(0, 10_000))
def test_viterbi_output_is_always_valid_and_optimal(n_words, seed):
    rng = np.random.default_rng(seed)
    scores = np.log(rng.dirichlet(np.ones(len(LABELS)), size=n_words))
    decoder = BioDecoder(LABELS)
    tags = decoder.decode_tags(scores)
    assert is_valid(tags)
    if n_words <= 5:  # brute force over every valid sequence
        import itertools

        best = max(
            (
                seq
                for seq in itertools.product(range(len(LABELS)), repeat=n_words)
                if is_valid([LABELS[i] for i in seq])
            ),
            key=lambda seq: sum(scores[t, i] for t, i in enumerate(seq)),
        )
        assert [LABELS[i] for i in best] == tags


def test_unknown_method():
    with pytest.raises(ValueError, match="viterbi"):
        BioDecoder(LABELS, "beam")
