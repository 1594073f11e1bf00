"""Evaluate a classifier on benchmark sentences with the same windows and decoding as training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from openmed_ray.eval.metrics import EvalReport, evaluate
from openmed_ray.eval.significance import approximate_randomization
from openmed_ray.io.iob import Sentence
from openmed_ray.models.inference import sentence_log_probs
from openmed_ray.text.decoding import DECODINGS, BioDecoder
from openmed_ray.text.windows import WindowSpec
from openmed_ray.train.data import encode_sentences


def sentence_scores(
    model: torch.nn.Module,
    tokenizer,
    sentences: Sequence[Sentence],
    *,
    spec: WindowSpec = WindowSpec(),
    batch_size: int = 64,
) -> list[np.ndarray]:
    """Per sentence, word-level log-probabilities (n_words, n_labels), before decoding."""
    windows = encode_sentences(tokenizer, list(sentences), None, spec)
    return sentence_log_probs(
        model,
        windows,
        [len(s) for s in sentences],
        pad_id=tokenizer.pad_token_id or 0,
        batch_size=batch_size,
    )


def predict_sentences(
    model: torch.nn.Module,
    tokenizer,
    labels: Sequence[str],
    sentences: Sequence[Sentence],
    *,
    decoding: str = "viterbi",
    spec: WindowSpec = WindowSpec(),
    batch_size: int = 64,
) -> list[list[str]]:
    scores = sentence_scores(model, tokenizer, sentences, spec=spec, batch_size=batch_size)
    decoder = BioDecoder(labels, decoding)
    return [decoder.decode_tags(s) for s in scores]


def evaluate_model(
    model: torch.nn.Module,
    tokenizer,
    labels: Sequence[str],
    sentences: Sequence[Sentence],
    *,
    decoding: str = "viterbi",
    spec: WindowSpec = WindowSpec(),
    batch_size: int = 64,
) -> tuple[EvalReport, list[list[str]]]:
    """(report, predicted tags) for gold-tagged sentences."""
    predicted = predict_sentences(
        model, tokenizer, labels, sentences, decoding=decoding, spec=spec, batch_size=batch_size
    )
    return evaluate([list(s.tags) for s in sentences], predicted), predicted


def compare_decodings(
    model: torch.nn.Module,
    tokenizer,
    labels: Sequence[str],
    sentences: Sequence[Sentence],
    *,
    spec: WindowSpec = WindowSpec(),
    batch_size: int = 64,
) -> dict[str, Any]:
    """Constrained Viterbi against argmax on the same forward pass: each one's report, the F1
    difference in points, and its approximate-randomization p-value."""
    scores = sentence_scores(model, tokenizer, sentences, spec=spec, batch_size=batch_size)
    gold = [list(s.tags) for s in sentences]
    tags = {
        method: [BioDecoder(labels, method).decode_tags(s) for s in scores] for method in DECODINGS
    }
    reports = {method: evaluate(gold, predicted) for method, predicted in tags.items()}
    test = approximate_randomization(gold, tags["viterbi"], tags["argmax"], n_shuffles=2000)
    return {
        "reports": reports,
        "viterbi_minus_argmax_pp": round(100 * (reports["viterbi"].f1 - reports["argmax"].f1), 3),
        "p_value": test.p_value,
    }


def evaluate_adapter(
    adapter: str,
    dataset_name: str,
    split: str = "test",
    *,
    decoding: str | None = None,
    data_root: str | None = None,
) -> EvalReport:
    """Evaluate any bundle (catalog name or path) on any split of a benchmark."""
    from openmed_ray.datasets import require_dataset
    from openmed_ray.errors import OpenMedError
    from openmed_ray.models.adapters import split_head_selection
    from openmed_ray.models.bundle import load_bundle
    from openmed_ray.models.catalog import resolve_adapter
    from openmed_ray.models.classifier import HeadView

    spec, wanted = split_head_selection(adapter)
    bundle = load_bundle(resolve_adapter(spec))
    dataset = require_dataset(dataset_name, data_root)
    sentences = dataset.load(split)
    model, labels = bundle.model, None
    if bundle.is_multitask:
        # The head trained on this dataset, unless one is named (all-types:chemical).
        head = wanted[0] if wanted else bundle.head_for(dataset.name)
        if head not in bundle.heads or (wanted and len(wanted) > 1):
            raise OpenMedError(
                f"multi-type bundle {bundle.name!r} has no head trained on {dataset.name}; "
                f"name one of its heads {list(bundle.heads)} as {spec}:HEAD"
            )
        model, labels = HeadView(bundle.model, head), bundle.heads[head]
    else:
        labels = bundle.labels
    unknown = sorted({t for s in sentences for t in s.tags} - set(labels))
    if unknown:
        raise OpenMedError(
            f"adapter {adapter!r} predicts {sorted({x[2:] for x in labels if x != 'O'})}, but "
            f"{dataset.name} {split} has label(s) {unknown}; evaluate it on a dataset with the "
            "same entity types"
        )
    hyper = bundle.card.get("hyperparameters", {})
    from openmed_ray.models.backbones import max_positions

    max_length = min(hyper.get("max_length", 256), max_positions(bundle.model.encoder.config))
    spec = WindowSpec(max_length, hyper.get("overlap", 50))
    report, _ = evaluate_model(
        model,
        bundle.tokenizer,
        labels,
        sentences,
        decoding=decoding or bundle.card.get("decoding", "viterbi"),
        spec=spec,
    )
    return report
