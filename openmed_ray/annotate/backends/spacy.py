"""spaCy pipelines as an annotation backend.

`nlp.pipe` runs with `n_process=1`: Ray's actor pool is the parallelism. Long documents are
cut into sentence-aligned chunks (spaCy refuses texts over `nlp.max_length`, and its memory
grows with length) and entity offsets are shifted back into the document. spaCy's NER gives
no per-entity confidence, so `score` is 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence

from openmed_ray.annotate.backends.base import Backend, BackendOutput, Entity
from openmed_ray.models.spacy_pipelines import describe_pipeline, load_pipeline
from openmed_ray.text.tokenize import chunk_spans

MAX_CHUNK_CHARS = 100_000


class SpacyBackend(Backend):
    def __init__(
        self, spec: str, *, batch_size: int = 64, max_chunk_chars: int = MAX_CHUNK_CHARS
    ) -> None:
        self.name, self.version, _ = describe_pipeline(spec)
        self.nlp = load_pipeline(spec)
        self.batch_size = batch_size
        self.max_chunk_chars = min(max_chunk_chars, self.nlp.max_length)

    def annotate(self, texts: Sequence[str]) -> list[BackendOutput]:
        outputs = [BackendOutput() for _ in texts]
        chunks = [
            (index, start, end)
            for index, text in enumerate(texts)
            for start, end in chunk_spans(text, self.max_chunk_chars)
        ]
        docs = self.nlp.pipe(
            (texts[i][start:end] for i, start, end in chunks),
            batch_size=self.batch_size,
            n_process=1,
        )
        for (index, offset, _), doc in zip(chunks, docs, strict=True):
            text = texts[index]
            for ent in doc.ents:
                start, end = offset + ent.start_char, offset + ent.end_char
                outputs[index].entities.append(
                    Entity(start, end, text[start:end], ent.label_, 1.0, self.name, self.version)
                )
        return outputs
