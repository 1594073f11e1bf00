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
    precision: str = "fp32",
    runtime: str = "torch",
) -> EvalReport:
    """Evaluate any adapter (catalog name, bundle path, HF directory) on any benchmark split,
    with the model the annotation engine runs at that precision and runtime.

    A multi-type bundle is scored by the head trained on the dataset, or by the one head
    named as NAME:HEAD."""
    report, _, _ = adapter_predictions(
        adapter,
        dataset_name,
        split,
        decoding=decoding,
        data_root=data_root,
        precision=precision,
        runtime=runtime,
    )
    return report


def adapter_predictions(
    adapter: str,
    dataset_name: str,
    split: str = "test",
    *,
    decoding: str | None = None,
    data_root: str | None = None,
    precision: str = "fp32",
    runtime: str = "torch",
) -> tuple[EvalReport, list[Sentence], list[list[str]]]:
    """`evaluate_adapter` with the gold sentences and predicted tags (significance tests)."""
    from openmed_ray.datasets import require_dataset
    from openmed_ray.errors import OpenMedError
    from openmed_ray.models.adapters import identify_adapter, load_predictor, split_head_selection
    from openmed_ray.models.bundle import read_card

    dataset = require_dataset(dataset_name, data_root)
    identity = identify_adapter(adapter, precision, runtime)
    if len(identity.heads) > 1:
        heads = {h["dataset"].lower(): h["name"] for h in read_card(identity.path)["heads"]}
        head = heads.get(dataset.name.lower())
        if head is None:
            raise OpenMedError(
                f"multi-type bundle {identity.name!r} has no head trained on {dataset.name}; "
                f"name one of its heads {list(identity.heads)} as "
                f"{split_head_selection(adapter)[0]}:HEAD"
            )
        adapter = f"{split_head_selection(adapter)[0]}:{head}"
    elif split_head_selection(adapter)[1] and len(identity.heads) != 1:
        raise OpenMedError(f"{adapter}: evaluate one head at a time")
    predictor = load_predictor(adapter, merge=True, precision=precision, runtime=runtime)
    (head,) = predictor.heads
    sentences = dataset.load(split)
    unknown = sorted({t for s in sentences for t in s.tags} - set(head.labels))
    if unknown:
        raise OpenMedError(
            f"adapter {adapter!r} predicts {sorted({x[2:] for x in head.labels if x != 'O'})}, "
            f"but {dataset.name} {split} has label(s) {unknown}; evaluate it on a dataset with "
            "the same entity types"
        )
    report, predicted = evaluate_model(
        predictor.model,
        predictor.tokenizer,
        head.labels,
        sentences,
        decoding=decoding or head.decoding,
        spec=WindowSpec(predictor.max_length, predictor.overlap),
    )
    return report, sentences, predicted
