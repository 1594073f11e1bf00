import json
import random
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from openmed_ray.eval import EvalReport, Score, entity_counts, evaluate


def test_missed_entity_hand_computed() -> None:
    gold = [["B-Disease", "I-Disease", "O", "B-Chemical"]]
    pred = [["B-Disease", "I-Disease", "O", "O"]]
    r = evaluate(gold, pred)
    assert (r.precision, r.recall) == (1.0, 0.5)
    assert r.f1 == pytest.approx(2 / 3)
    assert (r.support, r.n_predicted, r.n_sentences) == (2, 1, 1)
    assert list(r.per_type) == ["Chemical", "Disease"]
    assert r.per_type["Disease"] == Score(1.0, 1.0, 1.0, support=1, tp=1, fp=0, fn=0)
    assert r.per_type["Chemical"] == Score(0.0, 0.0, 0.0, support=1, tp=0, fp=0, fn=1)
    # Well-formed IOB2, so strict agrees with default.
    assert (r.strict.precision, r.strict.recall, r.strict.f1) == (r.precision, r.recall, r.f1)


def test_i_after_o_is_an_entity_in_default_mode_only() -> None:
    gold = [["O", "B-Disease", "I-Disease", "O", "B-Chemical"]]
    pred = [["O", "I-Disease", "I-Disease", "O", "B-Chemical"]]
    r = evaluate(gold, pred)
    # Default (conlleval): the I-Disease run opens a Disease(1, 2) chunk, matching gold.
    assert (r.precision, r.recall, r.f1) == (1.0, 1.0, 1.0)
    assert r.n_predicted == 2
    # Strict IOB2: no entity without a B-, so only Chemical is predicted: P=1/1, R=1/2.
    assert (r.strict.precision, r.strict.recall) == (1.0, 0.5)
    assert r.strict.f1 == pytest.approx(2 / 3)
    assert r.strict_per_type["Disease"] == Score(0.0, 0.0, 0.0, support=1, tp=0, fp=0, fn=1)
    assert r.strict_per_type["Chemical"].f1 == 1.0
    assert r.f1 == f1_score(gold, pred)
    assert r.strict.f1 == f1_score(gold, pred, mode="strict", scheme=IOB2)


def test_spurious_i_after_o_is_a_false_positive_in_default_mode_only() -> None:
    gold = [["B-Chemical", "O", "O"]]
    pred = [["B-Chemical", "O", "I-Disease"]]
    r = evaluate(gold, pred)
    assert (r.precision, r.recall) == (0.5, 1.0)
    assert r.f1 == pytest.approx(2 / 3)
    assert r.per_type["Disease"] == Score(0.0, 0.0, 0.0, support=0, tp=0, fp=1, fn=0)
    assert (r.strict.precision, r.strict.recall, r.strict.f1) == (1.0, 1.0, 1.0)
    assert "Disease" not in r.strict_per_type


@pytest.mark.parametrize(
    "pred_sentence",
    [
        ["B-Disease", "I-Disease", "O", "O"],  # too short
        ["O", "B-Disease", "I-Disease", "O"],  # shifted start
        ["B-Chemical", "I-Chemical", "I-Chemical", "O"],  # right span, wrong type
    ],
)
def test_any_span_or_type_mismatch_is_both_fp_and_fn(pred_sentence: list[str]) -> None:
    gold = [["B-Disease", "I-Disease", "I-Disease", "O"]]
    r = evaluate(gold, [pred_sentence])
    assert (r.precision, r.recall, r.f1) == (0.0, 0.0, 0.0)
    assert (r.support, r.n_predicted) == (1, 1)
    assert r.per_type["Disease"].fn == 1
    assert sum(s.fp for s in r.per_type.values()) == 1
    assert entity_counts(gold[0], pred_sentence) == (0, 1, 1)


def test_micro_average_pools_counts_across_sentences() -> None:
    gold = [
        ["B-Disease", "O", "B-Chemical", "I-Chemical"],
        ["O", "B-Chemical", "O"],
        ["O", "O", "O"],
    ]
    pred = [
        ["B-Disease", "O", "B-Chemical", "O"],  # Disease right; Chemical(2,2) vs gold (2,3)
        ["O", "B-Chemical", "O"],  # right
        ["B-Disease", "O", "O"],  # spurious
    ]
    # tp=2, fp=2, fn=1 -> P=1/2, R=2/3, F1=2PR/(P+R)=4/7.
    r = evaluate(gold, pred)
    assert r.precision == 0.5
    assert r.recall == pytest.approx(2 / 3)
    assert r.f1 == pytest.approx(4 / 7)
    assert (r.support, r.n_predicted, r.n_sentences) == (3, 4, 3)
    assert r.per_type["Disease"] == Score(0.5, 1.0, pytest.approx(2 / 3), 1, tp=1, fp=1, fn=0)
    assert r.per_type["Chemical"] == Score(0.5, 0.5, 0.5, 2, tp=1, fp=1, fn=1)
    assert [entity_counts(g, p) for g, p in zip(gold, pred, strict=True)] == [
        (1, 1, 1),
        (1, 0, 0),
        (0, 1, 0),
    ]


def test_entities_never_cross_sentence_boundaries() -> None:
    gold = [["O", "B-Disease"], ["I-Disease", "O"]]
    r = evaluate(gold, gold)
    # Two entities (the second opened by a leading I-), not one spanning the boundary.
    assert (r.support, r.f1) == (2, 1.0)
    assert (r.strict.support, r.strict.f1) == (1, 1.0)


def test_empty_and_entity_free_inputs_score_zero() -> None:
    for gold, pred in [([], []), ([[]], [[]]), ([["O", "O"]], [["O", "O"]])]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # zero division must not warn
            r = evaluate(gold, pred)
        assert (r.precision, r.recall, r.f1, r.support, r.n_predicted) == (0.0, 0.0, 0.0, 0, 0)
        assert r.per_type == {} and r.strict_per_type == {}
        assert r.strict == Score(0.0, 0.0, 0.0, 0)
        assert r.n_sentences == len(gold)


def test_accepts_tuples_and_other_sequences() -> None:
    gold = (("B-Disease", "I-Disease"), ("O",))
    assert evaluate(gold, [list(s) for s in gold]).f1 == 1.0


def test_sentence_count_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"gold has 2 sentences but pred has 1"):
        evaluate([["O"], ["O"]], [["O"]])


def test_sentence_length_mismatch_names_the_sentence_and_lengths() -> None:
    gold = [["O", "O"], ["B-Disease", "I-Disease", "O"]]
    pred = [["O", "O"], ["B-Disease", "O"]]
    with pytest.raises(ValueError, match=r"sentence 1: gold has 3 tags but pred has 2"):
        evaluate(gold, pred)
    with pytest.raises(ValueError, match=r"sentence 0: gold has 1 tags but pred has 2"):
        entity_counts(["O"], ["O", "O"])


@pytest.mark.parametrize("bad", ["X-Disease", "B-", "B", "I", "E-Disease", "S-Chem", "o", "", None])
def test_invalid_tags_name_sentence_and_position(bad: object) -> None:
    gold = [["O"], ["O", "O", "B-Disease"]]
    pred = [["O"], ["O", "O", bad]]
    with pytest.raises(ValueError, match=r"pred sentence 1, position 2: invalid IOB2 tag"):
        evaluate(gold, pred)
    with pytest.raises(ValueError, match=r"gold sentence 1, position 2"):
        evaluate(pred, gold)


def test_string_sentence_is_rejected() -> None:
    with pytest.raises(TypeError, match="sentence 0 is a string"):
        evaluate(["O"], [["O"]])


def test_to_dict_is_json_ready_with_the_documented_keys() -> None:
    gold = [["B-Disease", "I-Disease", "O", "B-Chemical"]]
    pred = [["B-Disease", "I-Disease", "O", "O"]]
    d = evaluate(gold, pred).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d) == {
        "precision",
        "recall",
        "f1",
        "support",
        "n_predicted",
        "n_sentences",
        "per_type",
        "strict",
        "strict_per_type",
    }
    assert d["per_type"]["Chemical"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert set(d["strict"]) == {"precision", "recall", "f1"}
    assert d["strict_per_type"]["Disease"]["f1"] == 1.0


def test_format_table_lists_types_and_both_micro_rows() -> None:
    gold = [["B-Disease", "I-Disease", "O", "B-Chemical"]]
    pred = [["B-Disease", "I-Disease", "O", "O"]]
    table = evaluate(gold, pred).format_table()
    lines = table.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    rows = {line.rsplit(maxsplit=4)[0].strip(): line.split()[-4:] for line in lines[2:] if line}
    assert rows["Chemical"] == ["0.0000", "0.0000", "0.0000", "1"]
    assert rows["Disease"] == ["1.0000", "1.0000", "1.0000", "1"]
    assert rows["micro avg"] == ["1.0000", "0.5000", "0.6667", "2"]
    assert rows["strict micro avg"] == ["1.0000", "0.5000", "0.6667", "2"]
    # Columns line up: every score row has the same width.
    widths = {len(line) for line in lines[2:] if line and not line.startswith("(")}
    assert len(widths) == 1


PLAIN_TAGS = ["O", "O", "O", "B-Disease", "I-Disease", "B-Chemical", "I-Chemical", "B-Gene-X"]
# Types with a leading/trailing "-" are parsed differently by seqeval's two modes.
ODD_TAGS = PLAIN_TAGS + ["I-Gene-X", "B--X", "I-X", "I-X-", "B-X-"]


def _paired_corpus(tags: list[str]) -> st.SearchStrategy[tuple[list[list[str]], list[list[str]]]]:
    def pair(n: int) -> st.SearchStrategy[tuple[list[str], list[str]]]:
        seq = st.lists(st.sampled_from(tags), min_size=n, max_size=n)
        return st.tuples(seq, seq)

    sentences = st.lists(st.integers(0, 12).flatmap(pair), min_size=1, max_size=8)
    return sentences.map(lambda pairs: ([g for g, _ in pairs], [p for _, p in pairs]))


def _assert_matches_seqeval(
    report: EvalReport, gold: list[list[str]], pred: list[list[str]]
) -> None:
    for mode, micro, per_type in [
        ({}, report, report.per_type),
        ({"mode": "strict", "scheme": IOB2}, report.strict, report.strict_per_type),
    ]:
        # Exact equality: the numbers must be seqeval's, not merely close to them.
        assert micro.precision == precision_score(gold, pred, zero_division=0, **mode)
        assert micro.recall == recall_score(gold, pred, zero_division=0, **mode)
        assert micro.f1 == f1_score(gold, pred, zero_division=0, **mode)
        with warnings.catch_warnings():
            # seqeval's own macro average warns on an empty corpus; irrelevant here.
            warnings.simplefilter("ignore", RuntimeWarning)
            cr = classification_report(gold, pred, output_dict=True, zero_division=0, **mode)
        expected = {
            name: (v["precision"], v["recall"], v["f1-score"], v["support"])
            for name, v in cr.items()
            if not name.endswith(" avg")
        }
        got = {n: (s.precision, s.recall, s.f1, s.support) for n, s in per_type.items()}
        assert got == expected
        assert list(per_type) == sorted(per_type)
        if per_type:
            assert cr["micro avg"]["support"] == micro.support


@settings(max_examples=200, deadline=None)
@given(_paired_corpus(PLAIN_TAGS))
def test_summed_sentence_counts_and_evaluate_match_seqeval(
    corpus: tuple[list[list[str]], list[list[str]]],
) -> None:
    gold, pred = corpus
    tp, fp, fn = (
        sum(c)
        for c in zip(*(entity_counts(g, p) for g, p in zip(gold, pred, strict=True)), strict=True)
    )
    summed = Score.from_counts(tp, fp, fn)
    assert summed.precision == precision_score(gold, pred, zero_division=0)
    assert summed.recall == recall_score(gold, pred, zero_division=0)
    assert summed.f1 == f1_score(gold, pred, zero_division=0)

    report = evaluate(gold, pred)
    assert (report.precision, report.recall, report.f1) == (
        summed.precision,
        summed.recall,
        summed.f1,
    )
    assert (report.support, report.n_predicted) == (tp + fn, tp + fp)
    _assert_matches_seqeval(report, gold, pred)


@settings(max_examples=150, deadline=None)
@given(_paired_corpus(ODD_TAGS))
def test_odd_type_names_still_match_seqeval_in_both_modes(
    corpus: tuple[list[list[str]], list[list[str]]],
) -> None:
    gold, pred = corpus
    _assert_matches_seqeval(evaluate(gold, pred), gold, pred)


def _realistic_corpus(n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    corpus = []
    for _ in range(n):
        sent: list[str] = []
        while len(sent) < 25:
            if rng.random() < 0.06:
                etype = rng.choice(["Disease", "Chemical"])
                sent += [f"B-{etype}"] + [f"I-{etype}"] * rng.randint(0, 2)
            else:
                sent.append("O")
        corpus.append(sent[:25])
    return corpus


def test_five_thousand_sentences_match_summed_counts() -> None:
    gold = _realistic_corpus(5000, seed=1)
    pred = _realistic_corpus(5000, seed=2)
    report = evaluate(gold, pred)
    assert report.n_sentences == 5000
    tp, fp, fn = (sum(c) for c in zip(*map(entity_counts, gold, pred), strict=True))
    assert (report.support, report.n_predicted) == (tp + fn, tp + fp)
