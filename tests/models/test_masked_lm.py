"""Masked-LM backbones: the tied-embedding head fallback, masked-only loss, perplexity, merge."""

from __future__ import annotations

import random

import pytest
import torch

from openmed_ray.config import LoraConfig
from openmed_ray.models.backbones import load_tokenizer, resolve_backbone
from openmed_ray.models.classifier import build_classifier
from openmed_ray.models.masked_lm import (
    MaskedLMError,
    build_masked_lm,
    load_masked_lm,
    lora_disabled,
    make_collator,
    mask_batch,
    perplexity,
)
from tests.conftest import synthetic_sentence


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(" ".join(synthetic_sentence(rng)[0]) for _ in range(4)) for _ in range(n)]


def test_a_checkpoint_without_head_gets_one_from_tied_embeddings(tiny_backbone):
    model, initialised = load_masked_lm(tiny_backbone)
    assert initialised == ["cls.predictions.transform.LayerNorm", "cls.predictions.transform.dense"]
    decoder = model.get_output_embeddings()
    assert decoder.weight is model.get_input_embeddings().weight
    assert torch.count_nonzero(decoder.bias) == 0
    dense = model.cls.predictions.transform.dense
    assert torch.equal(dense.weight, torch.eye(dense.in_features))

    wrapped = build_masked_lm(tiny_backbone, LoraConfig())
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert any("transform.dense.modules_to_save" in n for n in trainable)
    assert not any("word_embeddings" in n or "decoder" in n for n in trainable)


def test_masked_only_loss_equals_the_full_model_loss(tiny_backbone):
    tokenizer = load_tokenizer(tiny_backbone)
    model = build_masked_lm(tiny_backbone, LoraConfig()).eval()
    batch = mask_batch(make_collator(tokenizer, 0.15, seed=1), tokenizer, texts(8), 64)
    with torch.no_grad():
        loss_sum, masked = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
        full = model.model(**batch).loss
    assert int(masked) == int((batch["labels"] != -100).sum()) > 0
    assert float(loss_sum / masked) == pytest.approx(float(full), rel=1e-5)


def test_perplexity_is_deterministic_and_survives_merging(tiny_backbone, tmp_path):
    tokenizer = load_tokenizer(tiny_backbone)
    torch.manual_seed(0)
    model = build_masked_lm(tiny_backbone, LoraConfig(dropout=0.0))
    sample = texts(12)
    before = perplexity(model, tokenizer, sample, seq_len=64, batch_size=5)
    assert before == perplexity(model, tokenizer, sample, seq_len=64, batch_size=5)
    with lora_disabled(model):  # LoRA starts as a no-op (B = 0)
        assert perplexity(model, tokenizer, sample, seq_len=64, batch_size=5) == before
    # Train the LoRA and head layers a little so merging has something to fold in.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    collator = make_collator(tokenizer, 0.15, seed=2)
    for step in range(5):
        batch = mask_batch(collator, tokenizer, texts(8, seed=step + 1), 64)
        loss_sum, masked = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
        optimizer.zero_grad()
        (loss_sum / masked).backward()
        optimizer.step()
    trained = perplexity(model, tokenizer, sample, seq_len=64, batch_size=5)
    assert trained["perplexity"] != before["perplexity"]
    assert trained["masked_tokens"] == before["masked_tokens"]  # the same masks
    with lora_disabled(model):  # the trained head on the original encoder
        head_only = perplexity(model, tokenizer, sample, seq_len=64, batch_size=5)
    assert head_only["perplexity"] not in (trained["perplexity"], before["perplexity"])
    assert perplexity(model, tokenizer, sample, seq_len=64, batch_size=5) == trained

    model.save_adapter(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    merged_dir = model.save_merged(tmp_path / "merged", tokenizer)
    assert resolve_backbone(str(merged_dir)) == merged_dir.resolve()
    reloaded = build_masked_lm(merged_dir, None)
    assert reloaded.initialised_head == []  # the merged model carries its trained head
    again = perplexity(reloaded, tokenizer, sample, seq_len=64, batch_size=5)
    assert again["perplexity"] == pytest.approx(trained["perplexity"], rel=1e-4)
    classifier = build_classifier(merged_dir, 3, LoraConfig())
    assert classifier.encoder.config.hidden_size == 32


def test_an_architecture_without_masked_lm_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40)).save_pretrained(
        str(tmp_path / "gpt2")
    )
    with pytest.raises(MaskedLMError, match="no masked-LM model"):
        build_masked_lm(tmp_path / "gpt2", LoraConfig())
