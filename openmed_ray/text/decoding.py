"""Turning per-word label scores into IOB2 tags: argmax, or constrained BIO Viterbi.

The constrained decoder finds the most probable tag sequence in which every `I-X` follows
`B-X` or `I-X`. A model trained on first wordpieces often emits stray `I-` tags after `O`;
argmax keeps them (and conlleval counts each as an entity), Viterbi repairs them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DECODINGS = ("viterbi", "argmax")


def transition_mask(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(allowed[prev, next], allowed_start[next]) for IOB2 labels."""
    n = len(labels)
    allowed = np.ones((n, n), dtype=bool)
    allowed_start = np.ones(n, dtype=bool)
    for j, label in enumerate(labels):
        if label.startswith("I-"):
            entity_type = label[2:]
            allowed_start[j] = False
            for i, previous in enumerate(labels):
                allowed[i, j] = previous in (f"B-{entity_type}", f"I-{entity_type}")
    return allowed, allowed_start


class BioDecoder:
    """Decodes (n_words, n_labels) log-probabilities into label indices."""

    def __init__(self, labels: Sequence[str], method: str = "viterbi") -> None:
        if method not in DECODINGS:
            raise ValueError(f"decoding must be 'viterbi' or 'argmax', got {method!r}")
        self.labels = list(labels)
        self.method = method
        allowed, allowed_start = transition_mask(self.labels)
        # Additive penalties: 0 where allowed, -inf where forbidden.
        self._allowed = allowed
        self._allowed_start = allowed_start
        self._transitions = np.where(allowed, 0.0, -np.inf)
        self._start = np.where(allowed_start, 0.0, -np.inf)

    def decode(self, log_probs: np.ndarray) -> list[int]:
        if len(log_probs) == 0:
            return []
        best = log_probs.argmax(axis=1)
        if self.method == "argmax":
            return best.tolist()
        # A valid argmax path is already the constrained optimum: skip the dynamic program.
        if self._allowed_start[best[0]] and self._allowed[best[:-1], best[1:]].all():
            return best.tolist()
        n_words = log_probs.shape[0]
        score = log_probs[0] + self._start
        backpointers = np.empty((n_words, len(self.labels)), dtype=np.int64)
        for t in range(1, n_words):
            candidates = score[:, None] + self._transitions  # prev x next
            backpointers[t] = candidates.argmax(axis=0)
            score = candidates.max(axis=0) + log_probs[t]
        best = [int(score.argmax())]
        for t in range(n_words - 1, 0, -1):
            best.append(int(backpointers[t, best[-1]]))
        return best[::-1]

    def decode_tags(self, log_probs: np.ndarray) -> list[str]:
        return [self.labels[i] for i in self.decode(log_probs)]
