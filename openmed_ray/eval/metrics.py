"""Entity-level exact-match NER metrics, numerically identical to seqeval.

The headline numbers use seqeval's default (conlleval-compatible) mode, which is what published
biomedical NER tables report. Strict IOB2 scores are reported alongside because default mode
also credits ill-formed spans such as an ``I-X`` that follows ``O``.

Entities come from seqeval's own chunker (``get_entities``), extracted once per sentence and
side. Calling seqeval's public scorers instead would re-extract every entity for each number
(and build slow per-token objects for strict mode), roughly 2.5 s for 5,000 sentences. The
precision/recall/F1 arithmetic below mirrors seqeval's operation for operation, so the floats
are bit-identical; the tests check this against seqeval's public functions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2, Entities

__all__ = ["EvalReport", "Score", "entity_counts", "evaluate"]

# (type, start, end) with an inclusive end, exactly as seqeval's get_entities returns it.
Span = tuple[str, int, int]


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    """Precision, recall and F1 with seqeval's zero_division=0 semantics.

    Written as ``2.0 * p * r / (p + r)`` because seqeval computes
    ``(1 + beta**2) * p * r / (beta**2 * p + r)`` in float64; with beta=1 this is the same
    sequence of IEEE operations, so results match to the last bit.
    """
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    denom = p + r
    f1 = 2.0 * p * r / denom if denom else 0.0
    return p, r, f1


@dataclass(frozen=True)
class Score:
    """Precision/recall/F1 for one entity type or a micro average."""

    precision: float
    recall: float
    f1: float
    support: int  # number of gold entities
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int) -> Score:
        p, r, f1 = _prf(tp, tp + fp, tp + fn)
        return cls(precision=p, recall=r, f1=f1, support=tp + fn, tp=tp, fp=fp, fn=fn)

    def to_dict(self) -> dict[str, float | int]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
        }


@dataclass(frozen=True)
class EvalReport:
    """Corpus-level evaluation: default-mode micro scores first, strict IOB2 alongside."""

    precision: float
    recall: float
    f1: float
    support: int
    n_predicted: int
    per_type: dict[str, Score]
    strict: Score
    strict_per_type: dict[str, Score]
    n_sentences: int

    def to_dict(self) -> dict[str, object]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
            "n_predicted": self.n_predicted,
            "n_sentences": self.n_sentences,
            "per_type": {name: s.to_dict() for name, s in self.per_type.items()},
            "strict": {
                "precision": self.strict.precision,
                "recall": self.strict.recall,
                "f1": self.strict.f1,
            },
            "strict_per_type": {name: s.to_dict() for name, s in self.strict_per_type.items()},
        }

    def format_table(self, digits: int = 4) -> str:
        """Aligned per-type table in the style of seqeval's classification_report."""
        rows: list[tuple[str, float, float, float, int]] = [
            (name, s.precision, s.recall, s.f1, s.support) for name, s in self.per_type.items()
        ]
        micro = ("micro avg", self.precision, self.recall, self.f1, self.support)
        strict = (
            "strict micro avg",
            self.strict.precision,
            self.strict.recall,
            self.strict.f1,
            self.strict.support,
        )
        width = max([len(r[0]) for r in rows] + [len(strict[0])])
        col = max(9, digits + 3)
        headers = ("precision", "recall", "f1-score", "support")
        lines = [" " * width + " " + "".join(f" {h:>{col}}" for h in headers), ""]

        def fmt(row: tuple[str, float, float, float, int]) -> str:
            name, p, r, f1, support = row
            nums = "".join(f" {v:>{col}.{digits}f}" for v in (p, r, f1))
            return f"{name:>{width}} {nums} {support:>{col}}"

        lines.extend(fmt(r) for r in rows)
        if rows:
            lines.append("")
        lines.append(fmt(micro))
        lines.append(fmt(strict))
        lines.append(f"({self.n_sentences} sentences, {self.n_predicted} predicted entities)")
        return "\n".join(lines) + "\n"


def _is_valid_tag(tag: object) -> bool:
    return tag == "O" or (
        isinstance(tag, str) and len(tag) > 2 and tag[1] == "-" and tag[0] in "BI"
    )


def _as_sentences(seqs: Sequence[Sequence[str]], name: str) -> list[list[str]]:
    out: list[list[str]] = []
    for i, sent in enumerate(seqs):
        # A bare string would otherwise be split into one-character "tags".
        if isinstance(sent, str):
            raise TypeError(f"{name} sentence {i} is a string; expected a list of tag strings")
        # get_entities needs real lists (it does ``seq + ['O']``).
        out.append(sent if type(sent) is list else list(sent))
    return out


def _validate_tags(sentences: list[list[str]], name: str) -> None:
    # Check each distinct tag once, then rescan only if something is wrong to report where.
    bad = {tag for tag in set().union(*sentences) if not _is_valid_tag(tag)}
    if not bad:
        return
    for i, sent in enumerate(sentences):
        for j, tag in enumerate(sent):
            if tag in bad:
                raise ValueError(
                    f"{name} sentence {i}, position {j}: invalid IOB2 tag {tag!r} "
                    "(expected 'O', 'B-<type>' or 'I-<type>')"
                )


def _prepare(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    pred_name: str = "pred",
) -> tuple[list[list[str]], list[list[str]]]:
    """Validate a gold/prediction pair and return both as lists of lists."""
    if len(gold) != len(pred):
        raise ValueError(
            f"gold has {len(gold)} sentences but {pred_name} has {len(pred)}; "
            "they must be aligned sentence by sentence"
        )
    gold_l = _as_sentences(gold, "gold")
    pred_l = _as_sentences(pred, pred_name)
    for i, (g, p) in enumerate(zip(gold_l, pred_l, strict=True)):
        if len(g) != len(p):
            raise ValueError(
                f"sentence {i}: gold has {len(g)} tags but {pred_name} has {len(p)}; "
                "tags must align token by token"
            )
    _validate_tags(gold_l, "gold")
    _validate_tags(pred_l, pred_name)
    return gold_l, pred_l


def _entities(sentence: list[str]) -> list[Span]:
    # All-"O" sentences are common and cannot hold an entity; skip seqeval's per-token loop.
    if sentence.count("O") == len(sentence):
        return []
    return get_entities(sentence)


def _span_sets(sentences: list[list[str]]) -> list[set[Span]]:
    return [set(_entities(sent)) for sent in sentences]


def _counts(gold_set: set[Span], pred_set: set[Span]) -> tuple[int, int, int]:
    tp = len(gold_set & pred_set)
    return tp, len(pred_set) - tp, len(gold_set) - tp


def entity_counts(
    gold_sentence: Sequence[str], pred_sentence: Sequence[str]
) -> tuple[int, int, int]:
    """(tp, fp, fn) for one sentence, default (conlleval) mode, exact (type, start, end) match.

    Summed over sentences these reproduce seqeval's micro precision/recall/F1, because seqeval
    appends an ``O`` after every sentence and so never lets an entity cross a boundary.
    """
    gold_l, pred_l = _prepare([gold_sentence], [pred_sentence])
    return _counts(set(_entities(gold_l[0])), set(_entities(pred_l[0])))


def _strict_type(tag: str) -> str:
    # seqeval's strict Token strips the delimiter from the type, the default chunker does not.
    return tag[2:].strip("-") or "_"


def _needs_seqeval_strict(sentences: list[list[str]]) -> bool:
    # The fast strict path relies on both seqeval modes agreeing on every type name.
    return any(tag != "O" and tag[2:] != _strict_type(tag) for tag in set().union(*sentences))


def _strict_from_default(sentence: list[str], spans: list[Span]) -> set[Span]:
    """Strict IOB2 entities are exactly the default-mode chunks that open with ``B-``.

    Both modes extend a chunk over following ``I-`` tags of the same type and end it at anything
    else; they differ only in that default mode also opens a chunk at an ``I-`` tag that follows
    ``O`` or another type, which strict IOB2 rejects.
    """
    return {span for span in spans if sentence[span[1]][0] == "B"}


def _strict_via_seqeval(sentences: list[list[str]]) -> list[set[Span]]:
    # Exact but slow fallback for type names that start or end with "-".
    return [
        {(e.tag, e.start, e.end - 1) for e in sent} for sent in Entities(sentences, IOB2).entities
    ]


def _scores(
    tp: Counter[str], n_pred: Counter[str], n_true: Counter[str]
) -> tuple[Score, dict[str, Score]]:
    per_type = {
        name: Score.from_counts(tp[name], n_pred[name] - tp[name], n_true[name] - tp[name])
        for name in sorted(n_pred.keys() | n_true.keys())
    }
    total_tp = sum(tp.values())
    micro = Score.from_counts(
        total_tp, sum(n_pred.values()) - total_tp, sum(n_true.values()) - total_tp
    )
    return micro, per_type


def evaluate(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> EvalReport:
    """Score IOB2 predictions against gold, at entity level with exact span and type match.

    Raises ValueError (naming the sentence, and the position for bad tags) if the inputs are not
    aligned or contain a tag other than ``O``, ``B-<type>`` or ``I-<type>``.
    """
    gold_l, pred_l = _prepare(gold, pred)
    slow_strict = _needs_seqeval_strict(gold_l) or _needs_seqeval_strict(pred_l)
    if slow_strict:
        strict_gold = _strict_via_seqeval(gold_l)
        strict_pred = _strict_via_seqeval(pred_l)

    tp: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    n_true: Counter[str] = Counter()
    s_tp: Counter[str] = Counter()
    s_pred: Counter[str] = Counter()
    s_true: Counter[str] = Counter()
    for i, (g, p) in enumerate(zip(gold_l, pred_l, strict=True)):
        g_spans = _entities(g)
        p_spans = _entities(p)
        g_set = set(g_spans)
        p_set = set(p_spans)
        n_true.update(span[0] for span in g_set)
        n_pred.update(span[0] for span in p_set)
        tp.update(span[0] for span in g_set & p_set)

        if slow_strict:
            sg, sp = strict_gold[i], strict_pred[i]
        else:
            sg, sp = _strict_from_default(g, g_spans), _strict_from_default(p, p_spans)
        s_true.update(span[0] for span in sg)
        s_pred.update(span[0] for span in sp)
        s_tp.update(span[0] for span in sg & sp)

    micro, per_type = _scores(tp, n_pred, n_true)
    strict, strict_per_type = _scores(s_tp, s_pred, s_true)
    return EvalReport(
        precision=micro.precision,
        recall=micro.recall,
        f1=micro.f1,
        support=micro.support,
        n_predicted=micro.tp + micro.fp,
        per_type=per_type,
        strict=strict,
        strict_per_type=strict_per_type,
        n_sentences=len(gold_l),
    )
