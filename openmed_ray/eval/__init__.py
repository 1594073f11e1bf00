"""Evaluation: seqeval-exact entity-level metrics and paired significance testing."""

from openmed_ray.eval.metrics import EvalReport, Score, entity_counts, evaluate
from openmed_ray.eval.significance import SignificanceResult, approximate_randomization

__all__ = [
    "EvalReport",
    "Score",
    "SignificanceResult",
    "approximate_randomization",
    "entity_counts",
    "evaluate",
]
