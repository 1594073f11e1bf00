"""Transformer adapters (bundles or HF token classifiers) as an annotation backend.

Documents are split into sentences and NERsuite-style words (the benchmarks' tokenization),
every sentence of a batch is tokenized in one call, windows from all documents are sorted by
length and run through each adapter in padded batches, and word-level predictions are decoded
into BIO spans and mapped back to document character offsets. `text[start:end]` equals the
entity text by construction: spans start and end on word boundaries of the original text.
Adapters that share a tokenizer (and window size) share one tokenization of the batch. A
multi-type bundle is one encoder pass for all its heads; several head selections of the same
bundle (`all-types:chemical`, `all-types:gene`) are merged into that one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from openmed_ray.annotate.backends.base import Backend, BackendOutput, Entity
from openmed_ray.errors import OpenMedError
from openmed_ray.models.adapters import (
    AdapterIdentity,
    Predictor,
    identify_adapter,
    load_predictor,
    split_head_selection,
)
from openmed_ray.models.compiled import compilable, compile_for_inference
from openmed_ray.models.inference import AGGREGATIONS, choose_streams, sentence_log_probs
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
        compile: bool = False,
        cpu_bf16: bool | None = None,
        streams: int | None = None,
    ) -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.batch_size = batch_size
        self.aggregation = aggregation
        self.threshold = threshold
        self.device = torch.device(device)
        self.streams = choose_streams(
            streams, threads=torch.get_num_threads(), device=self.device.type, runtime=runtime
        ).streams
        # Merging LoRA into the encoder removes adapter overhead; each adapter keeps its own
        # merged copy so several can run in one pass over the data.
        self.predictors: list[Predictor] = [
            load_predictor(
                spec,
                merge=True,
                precision=precision,
                runtime=runtime,
                threads=threads,
                device=device,
                cpu_bf16=cpu_bf16,
            )
            for spec in merge_head_selections(adapters, precision, runtime, cpu_bf16)
        ]
        for predictor in self.predictors:
            predictor.model.to(self.device)
            if compile and compilable(runtime, predictor.precision):
                predictor.model = compile_for_inference(predictor.model)
        self.decoders = [
            [BioDecoder(head.labels, head.decoding) for head in p.heads] for p in self.predictors
        ]
        self.n_sources = sum(len(p.heads) for p in self.predictors)

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
        groups: dict[tuple, list[int]] = {}
        for index, p in enumerate(self.predictors):
            groups.setdefault((p.tokenizer_key, p.max_length, p.overlap), []).append(index)
        return list(groups.values())

    def _apply(
        self,
        index: int,
        sentences: list[_Sentence],
        windows: list[list[EncodedWindow]],
        texts: Sequence[str],
        outputs: list[BackendOutput],
    ) -> None:
        predictor = self.predictors[index]
        log_probs = sentence_log_probs(
            predictor.model,
            windows,
            [len(s.words) for s in sentences],
            pad_id=predictor.tokenizer.pad_token_id or 0,
            batch_size=self.batch_size,
            device=self.device,
            aggregation=self.aggregation,
            head_sizes=predictor.head_sizes,
            streams=self.streams,
        )
        bounds = np.cumsum([0, *predictor.head_sizes])
        for sentence, all_scores in zip(sentences, log_probs, strict=True):
            text = texts[sentence.document]
            for head, decoder, lo, hi in zip(
                predictor.heads, self.decoders[index], bounds[:-1], bounds[1:], strict=True
            ):
                scores = all_scores[:, lo:hi]
                tags = decoder.decode(scores)
                labels = [head.labels[t] for t in tags]
                for first, last, label in bio_to_spans(labels):
                    score = float(np.exp(scores[np.arange(first, last), tags[first:last]]).mean())
                    if score < self.threshold:
                        continue
                    start, end = sentence.offsets[first][0], sentence.offsets[last - 1][1]
                    outputs[sentence.document].entities.append(
                        Entity(
                            start, end, text[start:end], label, score, head.name, predictor.version
                        )
                    )


def merge_head_selections(
    adapters: Sequence[str], precision: str, runtime: str, cpu_bf16: bool | None = None
) -> list[str]:
    """The adapter specs with head selections of one multi-type bundle merged into one spec
    (one encoder pass), in first-seen order. Two different bundles under one name would
    write indistinguishable `adapter` values, so that is refused."""
    merged: dict[str, tuple[AdapterIdentity, str, list[str]]] = {}
    specs: list[str] = []
    for spec in adapters:
        identity = identify_adapter(spec, precision, runtime, cpu_bf16=cpu_bf16)
        if not identity.heads:
            specs.append(spec)
            continue
        known = merged.get(identity.name)
        if known is None:
            merged[identity.name] = (identity, split_head_selection(spec)[0], list(identity.heads))
            specs.append(identity.name)
            continue
        if known[0].path != identity.path or known[0].version != identity.version:
            raise OpenMedError(
                f"adapter name {identity.name!r} names two different multi-type bundles "
                f"({known[0].path}, version {known[0].version}; {identity.path}, version "
                f"{identity.version}); their entities could not be told apart"
            )
        known[2].extend(head for head in identity.heads if head not in known[2])
    return [f"{merged[s][1]}:{'+'.join(merged[s][2])}" if s in merged else s for s in specs]
