"""Document-level relation scoring: P/R/F1 of (doc, head, tail, relation) triples, the
threshold that maximises F1, and the precision-recall curve over the score threshold.

Gold relations whose entities are never mentioned still count as misses: recall is
measured against every gold relation, as in the BioCreative V CDR evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

Triple = tuple[str, str, str, str]


@dataclass(frozen=True)
class RelationScores:
    precision: float
    recall: float
    f1: float
    predicted: int
    gold: int
    hits: int
    threshold: float | None = None

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def relation_prf(
    predicted: Iterable[Triple], gold: Iterable[Triple], threshold: float | None = None
) -> RelationScores:
    predicted, gold = set(predicted), set(gold)
    hits = len(predicted & gold)
    p = hits / len(predicted) if predicted else 0.0
    r = hits / len(gold) if gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return RelationScores(p, r, f1, len(predicted), len(gold), hits, threshold)


def _ranked(scored: Sequence[tuple[Triple, float]], gold: set[Triple]) -> list[tuple[float, bool]]:
    return sorted(((score, triple in gold) for triple, score in scored), key=lambda x: -x[0])


def best_threshold(
    scored: Sequence[tuple[Triple, float]], gold: Iterable[Triple]
) -> RelationScores:
    """The score threshold (predict when score >= threshold) with the highest F1."""
    gold = set(gold)
    best = RelationScores(0.0, 0.0, 0.0, 0, len(gold), 0, 1.0)
    hits = 0
    ranked = _ranked(scored, gold)
    for rank, (score, correct) in enumerate(ranked, start=1):
        hits += correct
        if rank < len(ranked) and ranked[rank][0] == score:
            continue  # a threshold cannot split equal scores
        p, r = hits / rank, hits / len(gold) if gold else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        if f1 > best.f1:
            best = RelationScores(p, r, f1, rank, len(gold), hits, score)
    return best


def precision_recall_curve(
    scored: Sequence[tuple[Triple, float]], gold: Iterable[Triple], points: int = 50
) -> list[dict]:
    """(threshold, precision, recall) at evenly spaced thresholds in [0, 1]."""
    gold = set(gold)
    curve = []
    for k in range(points + 1):
        threshold = k / points
        chosen = [triple for triple, score in scored if score >= threshold]
        scores = relation_prf(chosen, gold, threshold)
        curve.append(
            {"threshold": round(threshold, 4), "precision": round(scores.precision, 4),
             "recall": round(scores.recall, 4), "f1": round(scores.f1, 4)}
        )  # fmt: skip
    return curve
