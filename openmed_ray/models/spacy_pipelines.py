"""spaCy pipelines (Med7, scispaCy, en_chem_ner, ...) as adapters: `spacy:PACKAGE` or
`spacy:/path/to/pipeline`.

spaCy is an optional extra. A pipeline's meta.json names the spaCy versions it was trained
for; spaCy itself only warns on a mismatch and may then load a model that misbehaves (the
Med7 pain point), so a mismatch is an error here, found before any document is read.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

from openmed_ray.errors import OpenMedError

SPACY_PREFIX = "spacy:"
INSTALL_HINT = "pip install 'openmed-ray[spacy]'"


class SpacyError(OpenMedError):
    """A spaCy pipeline that cannot be used: spaCy missing, pipeline missing, wrong version."""


def is_spacy_spec(spec: str) -> bool:
    return spec.startswith(SPACY_PREFIX)


def installed_spacy_version() -> str:
    if importlib.util.find_spec("spacy") is None:
        raise SpacyError(f"spaCy pipelines need spaCy, which is not installed: {INSTALL_HINT}")
    return importlib.metadata.version("spacy")


def _meta(target: str) -> tuple[dict[str, Any], Path]:
    """(meta.json, location) of a pipeline directory or an installed pipeline package."""
    path = Path(target).expanduser()
    if path.is_dir():
        meta = path / "meta.json"
        if not meta.is_file():
            raise SpacyError(f"{path} is not a spaCy pipeline directory (no meta.json)")
        return json.loads(meta.read_text()), path.resolve()
    spec = importlib.util.find_spec(target) if target.isidentifier() else None
    if spec is None or spec.origin is None:
        raise SpacyError(
            f"spaCy pipeline {target!r} is neither an installed package nor a directory: "
            f"install it (pip install {target}) or pass spacy:/path/to/pipeline"
        )
    package = Path(spec.origin).parent
    meta = package / "meta.json"
    if not meta.is_file():
        raise SpacyError(f"{target} ({package}) is not a spaCy pipeline package (no meta.json)")
    return json.loads(meta.read_text()), package


def check_compatible(name: str, meta: dict[str, Any], spacy_version: str) -> None:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    required = meta.get("spacy_version") or ""
    try:
        compatible = not required or SpecifierSet(required).contains(spacy_version)
    except InvalidSpecifier:
        raise SpacyError(
            f"{name}: meta.json has an unreadable spacy_version {required!r}"
        ) from None
    if not compatible:
        raise SpacyError(
            f"spaCy pipeline {name} {meta.get('version', '?')} requires spaCy {required}, but "
            f"spaCy {spacy_version} is installed; install a matching spaCy "
            f"(pip install 'spacy{required}') or a {name} release built for spaCy {spacy_version}"
        )


def describe_pipeline(spec: str) -> tuple[str, str, Path]:
    """(name, version, location) of a `spacy:` spec, checked against the installed spaCy,
    without loading any weights."""
    target = spec[len(SPACY_PREFIX) :]
    if not target:
        raise SpacyError(f"{spec!r}: name a pipeline package or directory after 'spacy:'")
    spacy_version = installed_spacy_version()
    meta, location = _meta(target)
    name = f"{meta['lang']}_{meta['name']}" if "lang" in meta and "name" in meta else target
    check_compatible(name, meta, spacy_version)
    return name, str(meta.get("version", "unknown")), location


def load_pipeline(spec: str):
    """The loaded `Language`, after the same checks as `describe_pipeline`."""
    import spacy

    _, _, location = describe_pipeline(spec)
    target = spec[len(SPACY_PREFIX) :]
    return spacy.load(location if Path(target).expanduser().is_dir() else target)
