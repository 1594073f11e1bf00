"""IO layer: benchmark readers (IOB2 TSV, PubTator), Parquet read/write, local or S3 filesystems."""

from openmed_ray.io.iob import Sentence, iter_iob2, parse_tag, read_iob2, write_iob2
from openmed_ray.io.pubtator import Mention, PubTatorDocument, Relation, read_pubtator

__all__ = [
    "Mention",
    "PubTatorDocument",
    "Relation",
    "Sentence",
    "iter_iob2",
    "parse_tag",
    "read_iob2",
    "read_pubtator",
    "write_iob2",
]
