"""Loading anything the annotation engine can apply: catalog names, bundle paths, or a plain
Hugging Face token-classification model directory. Each becomes a `Predictor` with the same
interface: a module mapping (input_ids, attention_mask) to per-piece logits, its heads (BIO
label sets, side by side in the logits), its tokenizer and a version string.

A multi-type bundle is one predictor with several heads: the encoder runs once per window
for all of them. `NAME:HEAD[+HEAD...]` asks for some of its heads (by head name or entity
type), e.g. `all-types:chemical+gene`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from openmed_ray.config import PRECISIONS, RUNTIMES
from openmed_ray.errors import OpenMedError
from openmed_ray.models.backbones import load_tokenizer, max_positions
from openmed_ray.models.bundle import MULTITASK, bundle_version, is_bundle, load_bundle, read_card
from openmed_ray.models.catalog import UnknownAdapterError, catalog_entries, resolve_adapter
from openmed_ray.models.precision import AUTO, PrecisionChoice, choose_precision
from openmed_ray.models.spacy_pipelines import describe_pipeline, is_spacy_spec


@dataclass
class PredictorHead:
    name: str  # the `adapter` column of the head's entities
    labels: list[str]
    decoding: str = "viterbi"


@dataclass
class Predictor:
    name: str
    version: str
    heads: list[PredictorHead]  # in the order of their logits
    model: torch.nn.Module
    tokenizer: Any
    tokenizer_key: str  # predictors sharing a key share tokenization
    max_length: int = 256
    overlap: int = 50
    precision: str = "fp32"  # what the model runs at (`auto` resolved)

    @property
    def head_sizes(self) -> list[int]:
        return [len(head.labels) for head in self.heads]


class _LogitsOnly(torch.nn.Module):
    """Adapts a transformers *ForTokenClassification model to forward(ids, mask) -> logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def _is_hf_token_classifier(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    data = json.loads(config.read_text())
    return any(a.endswith("ForTokenClassification") for a in data.get("architectures") or [])


def _bio_labels(id2label: dict, source: str) -> list[str]:
    labels = [id2label[i] for i in sorted(id2label, key=int)]
    for label in labels:
        if label != "O" and not (label[:2] in ("B-", "I-") and len(label) > 2):
            raise OpenMedError(
                f"{source}: label {label!r} is not IOB2 (O, B-X, I-X); the engine decodes BIO tags"
            )
    return labels


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization of Linear layers, per output channel (keeps F1 on MiniLM)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    return quantize_dynamic(
        model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
    )


@dataclass(frozen=True)
class AdapterIdentity:
    """What an adapter spec names, found without loading any weights."""

    name: str
    version: str  # the weights' content hash, plus the runtime and precision if not torch FP32
    path: Path
    kind: str  # "bundle", "transformers" or "spacy"
    weights_version: str  # the content hash alone
    heads: tuple[str, ...] = ()  # a multi-type bundle's chosen heads (all unless selected)
    precision: str = "fp32"  # the precision it runs at (`auto` resolved)
    precision_reason: str = "requested"


def split_head_selection(spec: str) -> tuple[str, list[str] | None]:
    """`all-types:chemical+gene` -> ("all-types", ["chemical", "gene"]); else (spec, None)."""
    base, colon, selection = spec.rpartition(":")
    if not colon or not base or not selection or "/" in selection or is_spacy_spec(spec):
        return spec, None
    return base, [part for part in selection.split("+") if part]


def select_heads(
    directory: Path, card: dict[str, Any], wanted: list[str] | None
) -> tuple[str, ...]:
    """The heads of a multi-type bundle that `wanted` names (head names or entity types)."""
    heads = card.get("heads") or []
    if not heads:
        raise UnknownAdapterError(f"{directory}/card.json: a multi-type bundle lists no heads")
    if wanted is None:
        return tuple(head["name"] for head in heads)
    chosen: list[str] = []
    for item in wanted:
        matches = [
            head["name"]
            for head in heads
            if item.lower() == head["name"].lower()
            or item.lower() in (t.lower() for t in head.get("entity_types", []))
        ]
        if not matches:
            offered = ", ".join(
                f"{h['name']} ({', '.join(h.get('entity_types', []))})" for h in heads
            )
            raise UnknownAdapterError(
                f"multi-type bundle {card.get('name') or directory.name!r} ({directory}) has "
                f"no head or entity type {item!r}; its heads: {offered}"
            )
        chosen += [name for name in matches if name not in chosen]
    return tuple(chosen)


def _hash_weights(path: Path) -> str:
    digest = hashlib.sha256()
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(weights.read_bytes())
    return digest.hexdigest()[:16]


def check_inference(precision: str, runtime: str) -> None:
    if precision not in (AUTO, *PRECISIONS):
        raise OpenMedError(f"precision must be auto or one of {PRECISIONS}, got {precision!r}")
    if runtime not in RUNTIMES:
        raise OpenMedError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "onnx" and precision == "bf16":
        raise OpenMedError("the onnx runtime runs fp32 or int8; use bf16 with --runtime torch")


def identify_adapter(
    spec: str,
    precision: str = "fp32",
    runtime: str = "torch",
    device: str = "cpu",
    cpu_bf16: bool | None = None,
) -> AdapterIdentity:
    """Resolve a catalog name, bundle path or HF model directory; fail clearly otherwise.

    `auto` precision is resolved from the card and the device (see models/precision.py);
    `cpu_bf16` says whether the CPU that runs the model has bf16 units (None: this one's).
    The version carries the precision and runtime when they are not the reference (torch
    FP32), so outputs of numerically different runs are never mixed up."""
    check_inference(precision, runtime)
    if is_spacy_spec(spec):
        name, version, location = describe_pipeline(spec)
        return AdapterIdentity(name, version, location, "spacy", version)
    entries = catalog_entries()
    spec, wanted_heads = split_head_selection(spec)
    path = Path(spec).expanduser()
    if spec not in entries and not is_bundle(path) and _is_hf_token_classifier(path):
        choice = _resolve_precision(precision, {}, device, runtime, cpu_bf16)
        weights = _hash_weights(path)
        return AdapterIdentity(
            path.name,
            weights + _version_suffix(choice.precision, runtime),
            path.resolve(),
            "transformers",
            weights,
            precision=choice.precision,
            precision_reason=choice.reason,
        )
    try:
        directory = resolve_adapter(spec)
    except UnknownAdapterError:
        raise UnknownAdapterError(
            f"unknown adapter {spec!r}: not in the catalog (known: "
            f"{', '.join(sorted(entries)) or 'none'}), not an adapter bundle directory, and not "
            "a Hugging Face token-classification model directory"
        ) from None
    card = read_card(directory)
    if card.get("task") == "relation":
        raise UnknownAdapterError(
            f"{spec!r} is a relation bundle ({directory}), not an NER adapter: it scores entity "
            "pairs in `openmed-ray kg --relations`"
        )
    name = spec if spec in entries else (card.get("name") or directory.name)
    weights = bundle_version(directory)
    heads: tuple[str, ...] = ()
    if card.get("task") == MULTITASK:
        heads = select_heads(directory, card, wanted_heads)
    elif wanted_heads is not None:
        raise UnknownAdapterError(
            f"{spec!r} is a single-type adapter ({directory}); only multi-type bundles take a "
            f"head selection like {spec}:{'+'.join(wanted_heads)}"
        )
    choice = _resolve_precision(precision, card, device, runtime, cpu_bf16)
    return AdapterIdentity(
        name,
        weights + _version_suffix(choice.precision, runtime),
        directory,
        "bundle",
        weights,
        heads,
        choice.precision,
        choice.reason,
    )


def _resolve_precision(
    precision: str, card: dict[str, Any], device: str, runtime: str, cpu_bf16: bool | None
) -> PrecisionChoice:
    if precision == AUTO:
        return choose_precision(card, device, runtime, cpu_bf16)
    return PrecisionChoice(precision, "requested")


def _version_suffix(precision: str, runtime: str) -> str:
    return "".join(f"-{part}" for part in (runtime, precision) if part not in ("torch", "fp32"))


def load_predictor(
    spec: str,
    *,
    merge: bool = True,
    precision: str = "fp32",
    runtime: str = "torch",
    threads: int | None = None,
    device: str = "cpu",
    cpu_bf16: bool | None = None,
) -> Predictor:
    """A ready-to-run predictor for a catalog name, bundle path or HF model directory."""
    identity = identify_adapter(spec, precision, runtime, device, cpu_bf16)
    precision = identity.precision
    if identity.kind == "spacy":
        raise OpenMedError(
            f"{spec} is a spaCy pipeline: it runs in the annotation engine, not as a predictor"
        )
    if identity.kind == "transformers":
        from transformers import AutoModelForTokenClassification

        hf_model = AutoModelForTokenClassification.from_pretrained(str(identity.path)).eval()
        predictor = Predictor(
            name=identity.name,
            version=identity.version,
            heads=[
                PredictorHead(
                    identity.name, _bio_labels(hf_model.config.id2label, str(identity.path))
                )
            ],
            model=_LogitsOnly(hf_model),
            tokenizer=load_tokenizer(identity.path),
            tokenizer_key=str(identity.path),
            max_length=min(256, max_positions(hf_model.config)),
        )
    else:
        bundle = load_bundle(identity.path, merge=merge)
        hyper = bundle.card.get("hyperparameters", {})
        decoding = bundle.card.get("decoding", "viterbi")
        if bundle.is_multitask:
            bundle.model.keep_heads(list(identity.heads))
            heads = [
                PredictorHead(f"{identity.name}:{head}", bundle.heads[head], decoding)
                for head in identity.heads
            ]
        else:
            heads = [PredictorHead(identity.name, bundle.labels, decoding)]
        predictor = Predictor(
            name=identity.name,
            version=identity.version,
            heads=heads,
            model=bundle.model,
            tokenizer=bundle.tokenizer,
            tokenizer_key=str(bundle.card.get("backbone")),
            max_length=min(
                hyper.get("max_length", 256), max_positions(bundle.model.encoder.config)
            ),
            overlap=hyper.get("overlap", 50),
        )
    if runtime == "onnx":
        from openmed_ray.models.onnx import onnx_classifier

        every_head = not identity.heads or list(identity.heads) == [
            head["name"] for head in read_card(identity.path).get("heads", [])
        ]
        predictor.model = onnx_classifier(
            predictor.model.eval(),
            identity.weights_version + ("" if every_head else "-" + "+".join(identity.heads)),
            precision,
            vocab_size=len(predictor.tokenizer),
            threads=threads or torch.get_num_threads(),
        )
    elif precision == "int8":
        predictor.model = quantize_int8(predictor.model)
    elif precision == "bf16":
        # Weights and activations in bfloat16: AMX/AVX-512-BF16 matmuls on recent x86 CPUs.
        predictor.model = predictor.model.to(torch.bfloat16)
    predictor.precision = precision
    predictor.model.eval()
    return predictor
