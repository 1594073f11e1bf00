"""Text layer: word/sentence segmentation, wordpiece windows and BIO span decoding."""

from openmed_ray.text.spans import bio_to_spans, tags_to_char_entities, word_spans_to_char_spans
from openmed_ray.text.tokenize import sentence_spans, word_spans
from openmed_ray.text.windows import (
    IGNORE_INDEX,
    EncodedWindow,
    WindowSpec,
    assign_owners,
    encode_batch,
    encode_words,
    gather_first_pieces,
    plan_windows,
    stitch,
)

__all__ = [
    "IGNORE_INDEX",
    "EncodedWindow",
    "WindowSpec",
    "assign_owners",
    "bio_to_spans",
    "encode_batch",
    "encode_words",
    "gather_first_pieces",
    "plan_windows",
    "sentence_spans",
    "stitch",
    "tags_to_char_entities",
    "word_spans",
    "word_spans_to_char_spans",
]
