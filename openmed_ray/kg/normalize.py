"""String normal forms for dictionary matching, ontology ID spellings and local IDs."""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")
# Apostrophes vanish ("Parkinson's" = "Parkinsons"); every other non-alphanumeric is a gap.
_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc`]")
_NON_ALNUM = re.compile(r"[\W_]+")
_BARE_MESH = re.compile(r"[CD]\d+")


def case_form(text: str) -> str:
    """Case-folded, whitespace-collapsed (`"Type 2  Diabetes"` -> `"type 2 diabetes"`)."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def punct_form(text: str) -> str:
    """`case_form` with punctuation removed: `"Alpha-methyl-DOPA"` -> `"alpha methyl dopa"`."""
    folded = _APOSTROPHES.sub("", case_form(text))
    return _NON_ALNUM.sub(" ", folded).strip()


def canonical_id(raw: str) -> str:
    """Ontology IDs as CURIEs: bare MeSH descriptors/supplements (`D009270`) get `MESH:`."""
    raw = raw.strip()
    return f"MESH:{raw}" if _BARE_MESH.fullmatch(raw) else raw


def local_id(entity_type: str, text: str) -> str:
    """The stable ID of a mention that links to no concept: `type:normalized text`."""
    return f"{entity_type}:{punct_form(text) or case_form(text)}"


def is_local_id(node_id: str, entity_type: str) -> bool:
    """Whether `node_id` is a `local_id` of this type (its mention linked to no concept)."""
    return node_id.startswith(f"{entity_type}:")
