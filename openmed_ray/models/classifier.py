"""The token classifier: an encoder (optionally LoRA-adapted) plus a linear head over BIO labels.

The head lives outside the encoder so several adapters can share one backbone at inference
time, and so the LoRA part stays a standard PEFT adapter on a plain `AutoModel`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from openmed_ray.config import LoraConfig


class EncoderWithHead(nn.Module):
    """An encoder (plain or LoRA-wrapped) with a task head beside it."""

    encoder: nn.Module

    @property
    def is_lora(self) -> bool:
        return hasattr(self.encoder, "peft_config")

    def merge_lora(self) -> None:
        """Fold LoRA into the encoder weights: same outputs, no adapter overhead at inference."""
        if self.is_lora:
            self.encoder = self.encoder.merge_and_unload()


class TokenClassifier(EncoderWithHead):
    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)
        nn.init.normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.classifier(self.dropout(hidden))

    def head_state(self) -> dict[str, torch.Tensor]:
        return {f"classifier.{k}": v for k, v in self.classifier.state_dict().items()}


class MultiTaskTokenClassifier(EncoderWithHead):
    """One encoder, one linear head per task (dataset): every entity type in one pass.

    `forward(ids, mask, head)` gives one head's logits (training, per-dataset evaluation);
    without `head` it gives every head's logits side by side, in `head_names` order, so the
    engine runs the encoder once per window for all types.
    """

    def __init__(
        self, encoder: nn.Module, head_labels: dict[str, int], dropout: float = 0.1
    ) -> None:
        super().__init__()
        if not head_labels:
            raise ValueError("a multi-task classifier needs at least one head")
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict(
            {name: nn.Linear(encoder.config.hidden_size, n) for name, n in head_labels.items()}
        )
        for head in self.heads.values():
            nn.init.normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)

    @property
    def head_names(self) -> list[str]:
        return list(self.heads)

    @property
    def head_sizes(self) -> list[int]:
        return [head.out_features for head in self.heads.values()]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, head: str | None = None
    ) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = self.dropout(hidden)
        if head is not None:
            return self.heads[head](hidden)
        return torch.cat([layer(hidden) for layer in self.heads.values()], dim=-1)

    def head_state(self) -> dict[str, torch.Tensor]:
        return {f"heads.{k}": v for k, v in self.heads.state_dict().items()}

    def keep_heads(self, names: list[str]) -> None:
        """Drop every head not in `names` and order the rest as given (inference selection)."""
        self.heads = nn.ModuleDict({name: self.heads[name] for name in names})


class HeadView(nn.Module):
    """One head of a multi-task classifier as a plain forward(ids, mask) -> logits module."""

    def __init__(self, model: nn.Module, head: str) -> None:
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask, self.head)


def load_encoder(backbone_dir: str | Path) -> nn.Module:
    from transformers import AutoModel

    # The pooler is unused for token classification; dropping it keeps DDP from waiting on
    # gradients that never come in full fine-tuning.
    try:
        encoder = AutoModel.from_pretrained(str(backbone_dir), add_pooling_layer=False)
    except TypeError:  # architectures without a pooler option
        encoder = AutoModel.from_pretrained(str(backbone_dir))
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


def lora_target_modules(encoder: nn.Module, lora: LoraConfig) -> list[str] | str:
    """Resolve LoRA targets; `query,value` maps to the architecture's names (DeBERTa: query_proj)."""
    if tuple(lora.targets) == ("all-linear",):
        return "all-linear"
    names = {name.rsplit(".", 1)[-1] for name, _ in encoder.named_modules()}
    if set(lora.targets) <= names:
        return list(lora.targets)
    if tuple(lora.targets) == ("query", "value"):
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        mapped = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(encoder.config.model_type)
        if mapped and set(mapped) <= names:
            return list(mapped)
    missing = sorted(set(lora.targets) - names)
    raise ValueError(
        f"LoRA target module(s) {missing} not found in {encoder.config.model_type}; "
        f"linear layers include e.g. {sorted(n for n in names if 'proj' in n or n in ('query', 'key', 'value', 'dense'))[:8]}"
    )


def build_classifier(
    backbone_dir: str | Path,
    num_labels: int,
    lora: LoraConfig | None,
    head_dropout: float = 0.1,
    gradient_checkpointing: bool = False,
) -> TokenClassifier:
    """A fresh classifier; with `lora` the encoder is frozen and only LoRA + head train."""
    encoder = adapt_encoder(load_encoder(backbone_dir), lora, gradient_checkpointing)
    return TokenClassifier(encoder, num_labels, head_dropout)


def adapt_encoder(
    encoder: nn.Module, lora: LoraConfig | None, gradient_checkpointing: bool = False
) -> nn.Module:
    """The encoder ready to train: LoRA-wrapped (base frozen) when `lora` is given."""
    if gradient_checkpointing:
        encoder.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    if lora is not None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        peft_config = PeftLoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora_target_modules(encoder, lora),
            bias="none",
        )
        encoder = get_peft_model(encoder, peft_config)
    return encoder


def build_multitask_classifier(
    backbone_dir: str | Path,
    head_labels: dict[str, int],
    lora: LoraConfig | None,
    head_dropout: float = 0.1,
    gradient_checkpointing: bool = False,
) -> MultiTaskTokenClassifier:
    """A fresh multi-task classifier: one encoder (LoRA or full), a head per task."""
    encoder = adapt_encoder(load_encoder(backbone_dir), lora, gradient_checkpointing)
    return MultiTaskTokenClassifier(encoder, head_labels, head_dropout)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the parameters that train (LoRA + head, or everything for full fine-tuning)."""
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
