"""Batching of windows for inference: padding-aware batches, and predictions independent of
how windows are batched."""

import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from openmed_ray.models import inference
from openmed_ray.models.inference import length_batches, window_log_probs
from openmed_ray.text.windows import WindowSpec, encode_batch


def cost(lengths, batches, batch_cost):
    return sum(max(lengths[i] for i in b) * len(b) + batch_cost for b in batches)


def best_cost(sorted_lengths, max_batch, batch_cost):
    """Exhaustive minimum over every cut of the sorted lengths into contiguous batches."""

    @functools.cache
    def from_(i):
        if i == len(sorted_lengths):
            return 0
        return min(
            sorted_lengths[j - 1] * (j - i) + batch_cost + from_(j)
            for j in range(i + 1, min(len(sorted_lengths), i + max_batch) + 1)
        )

    return from_(0)


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), max_size=12),
    max_batch=st.integers(1, 5),
    batch_cost=st.sampled_from([0, 1, 16, 64, 1000]),
)
def test_batches_cover_every_window_once_and_are_the_cheapest_cut(lengths, max_batch, batch_cost):
    batches = length_batches(lengths, max_batch, batch_cost)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(1 <= len(b) <= max_batch for b in batches)
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths)  # contiguous runs of the length-sorted order
    assert cost(lengths, batches, batch_cost) == best_cost(
        tuple(sorted(lengths)), max_batch, batch_cost
    )


def test_the_batch_cost_trades_padding_against_passes():
    lengths = [10] * 30 + [11] * 30 + [200, 250]
    free = length_batches(lengths, 64, batch_cost=0)
    assert all(len({lengths[i] for i in b}) == 1 for b in free)  # no padding at all
    costly = length_batches(lengths, 64, batch_cost=10**6)
    assert [len(b) for b in costly] == [62]  # one pass, as fixed-size chunks would be
    default = length_batches(lengths, 64)
    # the long tail gets its own pass instead of padding 60 short windows to 250
    assert [sorted(lengths[i] for i in b) for b in default] == [[10] * 30 + [11] * 30, [200, 250]]
    with pytest.raises(ValueError, match="max_batch"):
        length_batches(lengths, 0)


def test_predictions_do_not_depend_on_the_batching(tiny_backbone, monkeypatch):
    from openmed_ray.models.backbones import load_tokenizer
    from openmed_ray.models.classifier import build_classifier

    torch.manual_seed(0)
    model = build_classifier(tiny_backbone, num_labels=3, lora=None).eval()
    tokenizer = load_tokenizer(tiny_backbone)
    rng = np.random.default_rng(0)
    words = [[f"w{rng.integers(50)}" for _ in range(rng.integers(1, 40))] for _ in range(40)]
    windows = [w for ws in encode_batch(tokenizer, words, None, WindowSpec(64, 16)) for w in ws]
    lengths = [len(w.input_ids) for w in windows]
    assert length_batches(lengths, 8) != length_batches(lengths, 8, batch_cost=10**9)
    default = window_log_probs(model, windows, pad_id=0, batch_size=8)
    # fixed-size chunks of the sorted order, as before padding-aware batching
    monkeypatch.setattr(
        inference, "length_batches", functools.partial(length_batches, batch_cost=10**9)
    )
    chunked = window_log_probs(model, windows, pad_id=0, batch_size=8)
    assert len(default) == len(chunked) == len(windows)
    for a, b in zip(default, chunked, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
