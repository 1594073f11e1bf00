"""Transformer adapters (bundles or HF token classifiers) as an annotation backend.

Documents are split into sentences and NERsuite-style words (the benchmarks' tokenization),
every sentence of a batch is tokenized in one call, windows from all documents are sorted by
length and run through each adapter in padded batches, and word-level predictions are decoded
into BIO spans and mapped back to document character offsets. `text[start:end]` equals the
entity text by construction: spans start and end on word boundaries of the original text.
Adapters that share a tokenizer share one tokenization of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from openmed_ray.annotate.backends.base import Backend, BackendOutput, Entity
from openmed_ray.models.adapters import Predictor, load_predictor
from openmed_ray.models.inference import AGGREGATIONS, sentence_log_probs
from openmed_ray.text.decoding import BioDecoder
from openmed_ray.text.spans import bio_to_spans
from openmed_ray.text.tokenize import sentence_spans, word_spans
from openmed_ray.text.windows import EncodedWindow, WindowSpec, encode_batch


@dataclass
class _Sentence:
    document: int
    offsets: list[tuple[int, int]]  # word character offsets in the document
    words: list[str]


class TransformersBackend(Backend):
    def __init__(
        self,
        adapters: Sequence[str],
        *,
        batch_size: int = 64,
        aggregation: str = "first",
        threshold: float = 0.0,
        precision: str = "fp32",
        runtime: str = "torch",
        threads: int | None = None,
        device: str = "cpu",
    ) -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.batch_size = batch_size
        self.aggregation = aggregation
        self.threshold = threshold
        self.device = torch.device(device)
        # Merging LoRA into the encoder removes adapter overhead; each adapter keeps its own
        # merged copy so several can run in one pass over the data.
        self.predictors: list[Predictor] = [
            load_predictor(spec, merge=True, precision=precision, runtime=runtime, threads=threads)
            for spec in adapters
        ]
        for predictor in self.predictors:
            predictor.model.to(self.device)
        self.decoders = [BioDecoder(p.labels, p.decoding) for p in self.predictors]

    def annotate(self, texts: Sequence[str]) -> list[BackendOutput]:
        outputs = [BackendOutput() for _ in texts]
        sentences: list[_Sentence] = []
        for index, text in enumerate(texts):
            for begin, end in sentence_spans(text):
                offsets = [(begin + s, begin + e) for s, e in word_spans(text[begin:end])]
                if offsets:
                    sentences.append(_Sentence(index, offsets, [text[s:e] for s, e in offsets]))
        if not sentences:
            return outputs
        for group in self._tokenizer_groups():
            first = self.predictors[group[0]]
            spec = WindowSpec(first.max_length, first.overlap)
            windows = encode_batch(first.tokenizer, [s.words for s in sentences], None, spec)
            if group[0] == 0:
                for sentence, sentence_windows in zip(sentences, windows, strict=True):
                    outputs[sentence.document].n_wordpieces += sum(
                        len(w.input_ids) for w in sentence_windows
                    )
            for index in group:
                self._apply(index, sentences, windows, texts, outputs)
        return outputs

    def _tokenizer_groups(self) -> list[list[int]]:
        groups: dict[str, list[int]] = {}
        for index, predictor in enumerate(self.predictors):
            groups.setdefault(predictor.tokenizer_key, []).append(index)
        return list(groups.values())

    def _apply(
        self,
        index: int,
        sentences: list[_Sentence],
        windows: list[list[EncodedWindow]],
        texts: Sequence[str],
        outputs: list[BackendOutput],
    ) -> None:
        predictor, decoder = self.predictors[index], self.decoders[index]
        log_probs = sentence_log_probs(
            predictor.model,
            windows,
            [len(s.words) for s in sentences],
            pad_id=predictor.tokenizer.pad_token_id or 0,
            batch_size=self.batch_size,
            device=self.device,
            aggregation=self.aggregation,
        )
        for sentence, scores in zip(sentences, log_probs, strict=True):
            tags = decoder.decode(scores)
            labels = [predictor.labels[t] for t in tags]
            text = texts[sentence.document]
            for first, last, label in bio_to_spans(labels):
                score = float(np.exp(scores[np.arange(first, last), tags[first:last]]).mean())
                if score < self.threshold:
                    continue
                start, end = sentence.offsets[first][0], sentence.offsets[last - 1][1]
                outputs[sentence.document].entities.append(
                    Entity(
                        start, end, text[start:end], label, score, predictor.name, predictor.version
                    )
                )
