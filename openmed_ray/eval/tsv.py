"""Scoring IOB2 TSV files: gold against one system, or two systems with a significance test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmed_ray.errors import DataFormatError
from openmed_ray.eval.metrics import EvalReport, evaluate
from openmed_ray.eval.significance import SignificanceResult, approximate_randomization
from openmed_ray.io.iob import Sentence, read_iob2


def aligned_tags(gold: list[Sentence], path: str | Path) -> list[list[str]]:
    """A system's tags, after checking it has exactly the gold sentences and tokens."""
    predicted = read_iob2(path)
    if len(predicted) != len(gold):
        raise DataFormatError(
            path, None, f"has {len(predicted)} sentences but the gold file has {len(gold)}"
        )
    for index, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if g.tokens != p.tokens:
            offset = next(
                (i for i, (a, b) in enumerate(zip(g.tokens, p.tokens, strict=False)) if a != b),
                min(len(g.tokens), len(p.tokens)),
            )
            found = p.tokens[offset] if offset < len(p.tokens) else "<end of sentence>"
            expected = g.tokens[offset] if offset < len(g.tokens) else "<end of sentence>"
            raise DataFormatError(
                path,
                p.line + min(offset, len(p.tokens) - 1),
                f"sentence {index} differs from gold (gold line {g.line + offset}): "
                f"token {found!r} where gold has {expected!r}",
            )
    return [list(s.tags) for s in predicted]


@dataclass
class TsvComparison:
    report: EvalReport
    against: EvalReport | None = None
    significance: SignificanceResult | None = None

    def to_dict(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"system": self.report.to_dict()}
        if self.against is not None:
            payload["against"] = self.against.to_dict()
        if self.significance is not None:
            payload["significance"] = self.significance.to_dict()
        return payload

    def format(self) -> str:
        parts = ["system:", self.report.format_table()]
        if self.against is not None:
            parts += ["", "against:", self.against.format_table()]
        if self.significance is not None:
            s = self.significance
            parts += [
                "",
                f"approximate randomization ({s.n_shuffles} shuffles, seed {s.seed}): "
                f"F1 {s.f1_a:.4f} vs {s.f1_b:.4f}, difference {s.observed_difference:+.4f}, "
                f"p = {s.p_value:.4g}",
            ]
        return "\n".join(parts)


def compare_tsv_files(
    gold: str | Path,
    pred: str | Path,
    *,
    against: str | Path | None = None,
    n_shuffles: int = 10_000,
    seed: int = 0,
) -> TsvComparison:
    gold_sentences = read_iob2(gold)
    gold_tags = [list(s.tags) for s in gold_sentences]
    system = aligned_tags(gold_sentences, pred)
    comparison = TsvComparison(evaluate(gold_tags, system))
    if against is not None:
        other = aligned_tags(gold_sentences, against)
        comparison.against = evaluate(gold_tags, other)
        comparison.significance = approximate_randomization(
            gold_tags, system, other, n_shuffles=n_shuffles, seed=seed
        )
    return comparison
