"""Masked-LM backbones for domain-adaptive pre-training (DAPT).

`build_masked_lm` loads `AutoModelForMaskedLM` and adds LoRA. A checkpoint saved without an
MLM head (MiniLM's sentence-embedding checkpoint, or any plain `AutoModel` save) gets one:
the decoder is the tied input embeddings, its bias zero, and a square transform layer starts
as the identity (LayerNorm at its default). Those freshly made head layers then train beside
LoRA (PEFT `modules_to_save`, so they ship in the adapter); a checkpoint's own head stays
frozen. Its held-out perplexity before DAPT is therefore very high, honestly so.

`MaskedLM` scores masked positions only: the vocabulary projection, the costliest layer of a
small encoder's MLM step, runs on the ~15% of tokens that carry a label.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from openmed_ray.config import LoraConfig
from openmed_ray.errors import OpenMedError
from openmed_ray.models.backbones import max_positions
from openmed_ray.models.classifier import lora_target_modules

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


class MaskedLMError(OpenMedError):
    """The backbone cannot be trained as a masked language model."""


def _load_pretrained(backbone_dir: str | Path):
    from transformers import AutoModelForMaskedLM

    try:
        return AutoModelForMaskedLM.from_pretrained(str(backbone_dir), output_loading_info=True)
    except ValueError as exc:  # an architecture with no masked-LM class
        raise MaskedLMError(
            f"{backbone_dir}: this architecture has no masked-LM model in transformers "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}); DAPT needs an "
            "encoder such as BERT, RoBERTa or DeBERTa"
        ) from None


def _head_module(model) -> nn.Module:
    """The top-level child holding the output embeddings (BERT: `cls`, RoBERTa: `lm_head`)."""
    output = model.get_output_embeddings()
    for child in model.children():
        if child is not model.base_model and any(m is output for m in child.modules()):
            return child
    raise MaskedLMError(f"{type(model).__name__}: cannot find the MLM head module")


def _initialise_head(model, missing: list[str]) -> list[str]:
    """Make a head the checkpoint lacks; returns the modules that must train."""
    output = model.get_output_embeddings()
    output_name = next(name for name, module in model.named_modules() if module is output)
    embeddings = model.get_input_embeddings()
    if f"{output_name}.weight" in missing and output.weight is not embeddings.weight:
        output.weight = embeddings.weight  # tie the decoder to the input embeddings
    if f"{output_name}.bias" in missing and getattr(output, "bias", None) is not None:
        with torch.no_grad():
            output.bias.zero_()
    owners = {key.rsplit(".", 1)[0] for key in missing}
    modules = dict(model.named_modules())
    trainable = []
    for name in sorted(owners):
        module = modules.get(name)
        if module is None or any(m is output for m in module.modules()):
            continue  # the decoder (tied, frozen) or a module containing it
        if isinstance(module, nn.Linear) and module.in_features == module.out_features:
            with torch.no_grad():
                module.weight.copy_(torch.eye(module.in_features))
                if module.bias is not None:
                    module.bias.zero_()
        trainable.append(name)
    return trainable


def load_masked_lm(backbone_dir: str | Path) -> tuple[nn.Module, list[str]]:
    """(Hugging Face MLM model, head modules initialised here); errors name the backbone."""
    model, info = _load_pretrained(backbone_dir)
    prefix = model.base_model_prefix
    missing = sorted(info.get("missing_keys", ()))
    encoder_missing = [k for k in missing if k.startswith(f"{prefix}.")]
    if encoder_missing:
        raise MaskedLMError(
            f"{backbone_dir}: the checkpoint lacks encoder weights {encoder_missing[:4]}; "
            "point --backbone at a complete model directory"
        )
    if not missing:
        return model, []
    initialised = _initialise_head(model, missing)
    log.info(
        "%s has no masked-LM head: decoder tied to the input embeddings (bias 0), %s "
        "initialised (square layers as identity) and trained beside LoRA; perplexity before "
        "DAPT is that of this fresh head",
        backbone_dir,
        initialised or "nothing else",
    )
    return model, initialised


class MaskedLM(nn.Module):
    """An MLM model (optionally PEFT-wrapped) whose forward returns the summed loss over masked
    positions and their count, so losses add up exactly across batches and workers."""

    def __init__(self, model: nn.Module, initialised_head: Sequence[str] = ()) -> None:
        super().__init__()
        self.model = model
        self.initialised_head = list(initialised_head)

    @property
    def is_lora(self) -> bool:
        return hasattr(self.model, "peft_config")

    @property
    def pretrained(self):
        """The Hugging Face model (LoRA layers sit inside it when wrapped)."""
        return self.model.get_base_model() if self.is_lora else self.model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pretrained = self.pretrained
        hidden = pretrained.base_model(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        positions = labels != IGNORE_INDEX
        logits = _head_module(pretrained)(hidden[positions])
        loss_sum = nn.functional.cross_entropy(logits.float(), labels[positions], reduction="sum")
        return loss_sum, positions.sum()

    def save_adapter(self, directory: str | Path) -> None:
        """The standard PEFT adapter (LoRA plus any head layers made here)."""
        if not self.is_lora:
            raise MaskedLMError("no adapter to save: the model was built without LoRA")
        self.model.save_pretrained(str(directory))

    def save_merged(self, directory: str | Path, tokenizer) -> Path:
        """LoRA folded into the weights, saved with the tokenizer as a normal Hugging Face
        directory (a backbone for fine-tuning). Unwraps this model: save the adapter first."""
        merged = self.model.merge_and_unload() if self.is_lora else self.model
        self.model = merged
        directory = Path(directory)
        merged.save_pretrained(str(directory))
        tokenizer.model_max_length = min(tokenizer.model_max_length, max_positions(merged.config))
        tokenizer.save_pretrained(str(directory))
        return directory


@contextmanager
def lora_disabled(model: MaskedLM) -> Iterator[MaskedLM]:
    """The model with its LoRA layers off and any head made here still trained: the original
    encoder under the DAPT head, which separates what the encoder gained from the head."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def build_masked_lm(
    backbone_dir: str | Path, lora: LoraConfig | None, gradient_checkpointing: bool = False
) -> MaskedLM:
    """The MLM model; with `lora` only LoRA (and a head made here) trains."""
    model, initialised = load_masked_lm(backbone_dir)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora is not None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        peft_config = PeftLoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora_target_modules(model, lora),
            modules_to_save=initialised or None,
            bias="none",
        )
        model = get_peft_model(model, peft_config)
    return MaskedLM(model, initialised)


def mask_batch(collator, tokenizer, texts: Sequence[str], seq_len: int) -> dict[str, torch.Tensor]:
    """Tokenize (truncating to `seq_len`), pad and mask with a DataCollatorForLanguageModeling."""
    encoded = tokenizer(
        list(texts), truncation=True, max_length=seq_len, return_special_tokens_mask=True
    )
    features = [
        {"input_ids": ids, "special_tokens_mask": special}
        for ids, special in zip(encoded["input_ids"], encoded["special_tokens_mask"], strict=True)
    ]
    return collator(features)


def make_collator(tokenizer, mlm_probability: float, seed: int):
    """15% dynamic masking (80% [MASK], 10% random, 10% kept) from a generator of our own."""
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability)
    # Set directly: the collator's `seed` argument refuses processes it did not fork (Ray's).
    collator.generator = torch.Generator().manual_seed(seed)
    return collator


@torch.inference_mode()
def perplexity(
    model: MaskedLM,
    tokenizer,
    texts: Sequence[str],
    *,
    seq_len: int = 256,
    batch_size: int = 16,
    mlm_probability: float = 0.15,
    seed: int = 0,
) -> dict[str, Any]:
    """Masked-LM perplexity: exp(mean loss over masked tokens). The masks depend only on
    `seed` and the texts, so two models are compared on exactly the same positions."""
    was_training = model.training
    model.eval()
    collator = make_collator(tokenizer, mlm_probability, seed)
    total, masked = 0.0, 0
    for begin in range(0, len(texts), batch_size):
        batch = mask_batch(collator, tokenizer, texts[begin : begin + batch_size], seq_len)
        loss_sum, count = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
        total += float(loss_sum)
        masked += int(count)
    model.train(was_training)
    loss = total / max(1, masked)
    return {
        "perplexity": math.exp(loss),
        "loss": loss,
        "masked_tokens": masked,
        "passages": len(texts),
    }
