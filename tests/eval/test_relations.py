"""Document-level relation P/R/F1 and the best threshold, against brute force."""

import random

from openmed_ray.eval.relations import best_threshold, precision_recall_curve, relation_prf


def triple(i: int) -> tuple[str, str, str, str]:
    return (f"d{i % 7}", f"C{i}", f"D{i}", "CID")


def test_best_threshold_matches_every_threshold_tried_by_hand():
    rng = random.Random(3)
    scored = [(triple(i), round(rng.random(), 2)) for i in range(200)]
    gold = {t for t, s in scored if rng.random() < s} | {triple(500)}  # one unreachable
    best = best_threshold(scored, gold)
    brute = max(
        (
            relation_prf([t for t, s in scored if s >= cut], gold, cut)
            for cut in {s for _, s in scored}
        ),
        key=lambda r: r.f1,
    )
    assert abs(best.f1 - brute.f1) < 1e-12 and best.threshold == brute.threshold
    again = relation_prf([t for t, s in scored if s >= best.threshold], gold)
    assert (again.hits, again.predicted, again.gold) == (best.hits, best.predicted, len(gold))


def test_prf_counts_and_the_curve_runs_from_everything_to_nothing():
    scores = relation_prf([triple(1), triple(2)], [triple(2), triple(3)])
    assert (scores.precision, scores.recall, scores.f1) == (0.5, 0.5, 0.5)
    curve = precision_recall_curve([(triple(1), 0.2), (triple(2), 0.9)], [triple(2)], points=10)
    assert curve[0]["recall"] == 1.0 and curve[0]["precision"] == 0.5
    assert curve[-1]["recall"] == 0.0
