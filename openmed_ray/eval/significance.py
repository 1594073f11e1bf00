"""Paired approximate-randomization test for a difference in micro F1 (Noreen, 1989).

Under the null hypothesis the two systems are exchangeable, so each sentence's output is equally
likely to have come from either. Each shuffle swaps every sentence's A/B entity counts with
probability 0.5 and recomputes |F1(A') - F1(B')| from the summed counts; the p-value is the
fraction of shuffles at least as extreme as the observed difference, with the +1 correction so it
is never 0.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from openmed_ray.eval.metrics import Score, Span, _counts, _prepare, _span_sets

__all__ = ["SignificanceResult", "approximate_randomization"]

# Tolerance so shuffles that reproduce the observed statistic up to rounding still count.
_EPS = 1e-12
# Cap on shuffle-by-sentence cells held in memory per chunk (about 16 MB as float64).
_CHUNK_CELLS = 1 << 21


@dataclass(frozen=True)
class SignificanceResult:
    """Outcome of a paired approximate-randomization test of micro F1 (default mode)."""

    p_value: float
    observed_difference: float  # f1_a - f1_b
    f1_a: float
    f1_b: float
    n_shuffles: int
    seed: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Vectorised F1 using the same float operations as ``Score.from_counts``.

    Keeping the operation order identical means identical counts give bit-identical F1, so a
    shuffle that merely relabels A and B reproduces the observed statistic exactly.
    """
    n_pred = tp + fp
    n_true = tp + fn
    p = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    r = np.divide(tp, n_true, out=np.zeros_like(tp), where=n_true > 0)
    denom = p + r
    return np.divide(2.0 * p * r, denom, out=np.zeros_like(tp), where=denom > 0)


def _per_sentence_counts(gold_sets: list[set[Span]], pred: list[list[str]]) -> np.ndarray:
    counts = [_counts(g, p) for g, p in zip(gold_sets, _span_sets(pred), strict=True)]
    return np.array(counts, dtype=np.int64).reshape(-1, 3)


def approximate_randomization(
    gold: Sequence[Sequence[str]],
    pred_a: Sequence[Sequence[str]],
    pred_b: Sequence[Sequence[str]],
    n_shuffles: int = 10_000,
    seed: int = 0,
) -> SignificanceResult:
    """Two-sided p-value for the micro-F1 difference between systems A and B on the same gold.

    F1 is seqeval's default (conlleval) mode, matching ``evaluate``. Deterministic for a given
    seed. Raises ValueError if n_shuffles < 1 or the inputs are not aligned.
    """
    if (
        isinstance(n_shuffles, bool)
        or not isinstance(n_shuffles, numbers.Integral)
        or n_shuffles < 1
    ):
        raise ValueError(f"n_shuffles must be an integer >= 1, got {n_shuffles!r}")
    gold_l, a_l = _prepare(gold, pred_a, pred_name="pred_a")
    _, b_l = _prepare(gold, pred_b, pred_name="pred_b")

    gold_sets = _span_sets(gold_l)  # extracted once, shared by both systems
    counts_a = _per_sentence_counts(gold_sets, a_l)
    counts_b = _per_sentence_counts(gold_sets, b_l)
    total_a = counts_a.sum(axis=0)
    total_b = counts_b.sum(axis=0)
    f1_a = Score.from_counts(*(int(x) for x in total_a)).f1
    f1_b = Score.from_counts(*(int(x) for x in total_b)).f1
    observed = f1_a - f1_b
    threshold = abs(observed) - _EPS

    # Swapping a sentence whose counts agree changes nothing, so only differing ones are drawn.
    delta = (counts_a - counts_b)[np.any(counts_a != counts_b, axis=1)].astype(np.float64)
    n_diff = delta.shape[0]
    rng = np.random.default_rng(seed)
    at_least_as_extreme = 0
    if n_diff == 0:
        # Every shuffle reproduces the observed totals.
        at_least_as_extreme = n_shuffles
    else:
        base_a = total_a.astype(np.float64)
        base_b = total_b.astype(np.float64)
        n_bytes = (n_diff + 7) // 8
        chunk = max(1, min(n_shuffles, _CHUNK_CELLS // n_diff))
        done = 0
        while done < n_shuffles:
            rows = min(chunk, n_shuffles - done)
            # One random bit per sentence and shuffle: 8x fewer draws than rng.random().
            bits = rng.integers(0, 256, size=(rows, n_bytes), dtype=np.uint8)
            swap = np.unpackbits(bits, axis=1, count=n_diff).astype(np.float64)
            # Counts are small integers, so float64 matmul sums them exactly.
            moved = swap @ delta
            a = base_a - moved
            b = base_b + moved
            stat = np.abs(_f1(a[:, 0], a[:, 1], a[:, 2]) - _f1(b[:, 0], b[:, 1], b[:, 2]))
            at_least_as_extreme += int(np.count_nonzero(stat >= threshold))
            done += rows

    return SignificanceResult(
        p_value=(at_least_as_extreme + 1) / (n_shuffles + 1),
        observed_difference=observed,
        f1_a=f1_a,
        f1_b=f1_b,
        n_shuffles=int(n_shuffles),
        seed=seed,
    )
