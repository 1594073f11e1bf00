import itertools

import pytest

from openmed_ray.eval import (
    Score,
    SignificanceResult,
    approximate_randomization,
    entity_counts,
    evaluate,
)

ENTITY = ["O", "B-Disease", "I-Disease", "O"]
EMPTY = ["O", "O", "O", "O"]
SHIFTED = ["O", "O", "B-Disease", "O"]


def test_identical_systems_are_never_significant() -> None:
    gold = [ENTITY, EMPTY, ENTITY]
    pred = [ENTITY, SHIFTED, EMPTY]
    result = approximate_randomization(gold, pred, [list(s) for s in pred], n_shuffles=500)
    assert result.p_value == 1.0
    assert result.observed_difference == 0.0
    assert result.f1_a == result.f1_b


def test_perfect_versus_empty_system_is_significant() -> None:
    gold = [ENTITY] * 200
    result = approximate_randomization(gold, gold, [EMPTY] * 200, n_shuffles=2000, seed=3)
    assert (result.f1_a, result.f1_b, result.observed_difference) == (1.0, 0.0, 1.0)
    # Only the two all-or-nothing swaps (probability 2**-199) can match the observed gap.
    assert result.p_value == pytest.approx(1 / 2001)
    assert result.p_value < 0.01


def test_a_single_differing_sentence_is_not_significant() -> None:
    gold = [ENTITY] * 5
    pred_a = [ENTITY] * 5
    pred_b = [ENTITY] * 4 + [EMPTY]
    result = approximate_randomization(gold, pred_a, pred_b, n_shuffles=1000)
    assert result.observed_difference > 0
    # Swapping the one differing sentence only flips the sign, so every shuffle is as extreme.
    assert result.p_value >= 0.5
    assert result.p_value == 1.0


def _exact_permutation_p(gold, pred_a, pred_b) -> float:
    """Enumerate all 2**n swap patterns: the distribution that the sampler approximates."""
    ca = [entity_counts(g, p) for g, p in zip(gold, pred_a, strict=True)]
    cb = [entity_counts(g, p) for g, p in zip(gold, pred_b, strict=True)]

    def f1(counts) -> float:
        return Score.from_counts(*(sum(c) for c in zip(*counts, strict=True))).f1

    observed = abs(f1(ca) - f1(cb))
    hits = 0
    patterns = list(itertools.product([False, True], repeat=len(gold)))
    for swap in patterns:
        a = [b_ if s else a_ for a_, b_, s in zip(ca, cb, swap, strict=True)]
        b = [a_ if s else b_ for a_, b_, s in zip(ca, cb, swap, strict=True)]
        hits += abs(f1(a) - f1(b)) >= observed - 1e-12
    return hits / len(patterns)


def test_p_value_converges_to_the_exact_permutation_p_value() -> None:
    gold = [ENTITY, ENTITY, ENTITY, ENTITY, ["B-Chemical", "O", "B-Disease", "O"], ENTITY]
    pred_a = [ENTITY, ENTITY, ENTITY, SHIFTED, ["B-Chemical", "O", "O", "O"], ENTITY]
    pred_b = [SHIFTED, EMPTY, ENTITY, ENTITY, ["O", "O", "B-Disease", "O"], EMPTY]
    exact = _exact_permutation_p(gold, pred_a, pred_b)
    assert 0.05 < exact < 0.95  # a case where the answer is not trivially 0 or 1
    result = approximate_randomization(gold, pred_a, pred_b, n_shuffles=20_000, seed=11)
    # Binomial standard error at 20k shuffles is below 0.004.
    assert result.p_value == pytest.approx(exact, abs=0.015)


def test_same_seed_is_deterministic_and_f1_matches_evaluate() -> None:
    gold = [ENTITY, ["B-Chemical", "I-Chemical", "O", "B-Disease"]] * 30
    pred_a = [ENTITY, ["B-Chemical", "I-Chemical", "O", "O"]] * 30
    pred_b = [SHIFTED, ["B-Chemical", "O", "O", "B-Disease"]] * 30
    first = approximate_randomization(gold, pred_a, pred_b, n_shuffles=3000, seed=7)
    second = approximate_randomization(gold, pred_a, pred_b, n_shuffles=3000, seed=7)
    assert first == second
    assert first.seed == 7 and first.n_shuffles == 3000
    f1_a, f1_b = evaluate(gold, pred_a).f1, evaluate(gold, pred_b).f1
    assert (first.f1_a, first.f1_b) == (f1_a, f1_b)
    assert first.observed_difference == f1_a - f1_b
    assert 1 / 3001 <= first.p_value <= 1.0


def test_to_dict() -> None:
    result = approximate_randomization([ENTITY], [ENTITY], [EMPTY], n_shuffles=10, seed=5)
    assert isinstance(result, SignificanceResult)
    assert result.to_dict() == {
        "p_value": result.p_value,
        "observed_difference": 1.0,
        "f1_a": 1.0,
        "f1_b": 0.0,
        "n_shuffles": 10,
        "seed": 5,
    }


@pytest.mark.parametrize("n_shuffles", [0, -5, 2.5])
def test_rejects_bad_n_shuffles(n_shuffles: object) -> None:
    with pytest.raises(ValueError, match="n_shuffles"):
        approximate_randomization([ENTITY], [ENTITY], [EMPTY], n_shuffles=n_shuffles)


def test_rejects_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match=r"sentence 1: gold has 4 tags but pred_b has 3"):
        approximate_randomization([ENTITY, ENTITY], [ENTITY, ENTITY], [ENTITY, ["O", "O", "O"]])
    with pytest.raises(ValueError, match=r"gold has 2 sentences but pred_a has 1"):
        approximate_randomization([ENTITY, ENTITY], [ENTITY], [ENTITY, ENTITY])
    with pytest.raises(ValueError, match=r"pred_b sentence 0, position 1"):
        approximate_randomization([ENTITY], [ENTITY], [["O", "B-", "O", "O"]])


def test_ten_thousand_shuffles_over_five_thousand_differing_sentences() -> None:
    # Every sentence differs between the systems, the worst case for the sampler.
    gold = [ENTITY] * 5000
    pred_a = [ENTITY if i % 3 else SHIFTED for i in range(5000)]
    pred_b = [SHIFTED if i % 3 else ENTITY for i in range(5000)]
    result = approximate_randomization(gold, pred_a, pred_b, n_shuffles=10_000)
    assert result.p_value < 0.01
