"""Evaluate a classifier on benchmark sentences with the same windows and decoding as training."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from openmed_ray.eval.metrics import EvalReport, evaluate
from openmed_ray.io.iob import Sentence
from openmed_ray.text.decoding import BioDecoder
from openmed_ray.text.windows import WindowSpec
from openmed_ray.train.data import encode_sentences
from openmed_ray.train.loop import predict_tags


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
    windows = encode_sentences(tokenizer, list(sentences), None, spec)
    return predict_tags(
        model,
        list(sentences),
        windows,
        BioDecoder(labels, decoding),
        pad_id=tokenizer.pad_token_id or 0,
        batch_size=batch_size,
    )


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
    from openmed_ray.models.bundle import load_bundle
    from openmed_ray.models.catalog import resolve_adapter

    bundle = load_bundle(resolve_adapter(adapter))
    dataset = require_dataset(dataset_name, data_root)
    sentences = dataset.load(split)
    unknown = sorted({t for s in sentences for t in s.tags} - set(bundle.labels))
    if unknown:
        from openmed_ray.errors import OpenMedError

        raise OpenMedError(
            f"adapter {bundle.name!r} predicts {bundle.entity_types}, but {dataset.name} {split} "
            f"has label(s) {unknown}; evaluate it on a dataset with the same entity types"
        )
    hyper = bundle.card.get("hyperparameters", {})
    from openmed_ray.models.backbones import max_positions

    max_length = min(hyper.get("max_length", 256), max_positions(bundle.model.encoder.config))
    spec = WindowSpec(max_length, hyper.get("overlap", 50))
    report, _ = evaluate_model(
        bundle.model,
        bundle.tokenizer,
        bundle.labels,
        sentences,
        decoding=decoding or bundle.card.get("decoding", "viterbi"),
        spec=spec,
    )
    return report
