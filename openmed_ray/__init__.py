"""openmed-ray: biomedical NER at scale on Ray."""

from __future__ import annotations

__version__ = "0.1.0"


def annotate_texts(*args, **kwargs):
    """In-process annotation with HF-pipeline-compatible output; see openmed_ray.annotate."""
    from openmed_ray.annotate import annotate_texts as _annotate_texts

    return _annotate_texts(*args, **kwargs)


__all__ = ["__version__", "annotate_texts"]
