"""openmed-ray: biomedical NER at scale on Ray."""

__version__ = "0.1.0"
