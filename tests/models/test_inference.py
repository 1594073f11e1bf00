"""Batching of windows for inference: padding-aware batches, concurrent streams of them, and
predictions independent of how windows are batched or streamed."""

import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from openmed_ray.errors import ConfigError
from openmed_ray.models import inference
from openmed_ray.models.inference import choose_streams, length_batches, window_log_probs
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


def model_and_windows(backbone):
    """An untrained tiny classifier and 40 random sentences' windows of up to 64 pieces."""
    from openmed_ray.models.backbones import load_tokenizer
    from openmed_ray.models.classifier import build_classifier

    torch.manual_seed(0)
    model = build_classifier(backbone, num_labels=3, lora=None).eval()
    tokenizer = load_tokenizer(backbone)
    rng = np.random.default_rng(0)
    words = [[f"w{rng.integers(50)}" for _ in range(rng.integers(1, 40))] for _ in range(40)]
    windows = [w for ws in encode_batch(tokenizer, words, None, WindowSpec(64, 16)) for w in ws]
    return model, windows


def test_predictions_do_not_depend_on_the_batching(tiny_backbone, monkeypatch):
    model, windows = model_and_windows(tiny_backbone)
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


def test_streams_give_the_same_predictions_and_leave_the_thread_count_as_it_was(tiny_backbone):
    model, windows = model_and_windows(tiny_backbone)
    threads = torch.get_num_threads()
    one = window_log_probs(model, windows, pad_id=0, batch_size=4)
    for streams in (2, 3):
        concurrent = window_log_probs(model, windows, pad_id=0, batch_size=4, streams=streams)
        assert torch.get_num_threads() == threads
        assert len(concurrent) == len(one)
        for a, b in zip(one, concurrent, strict=True):  # each window in its own place
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert not torch.is_inference_mode_enabled() and model.training is False


def test_a_failing_batch_in_a_stream_raises_and_restores_the_threads(tiny_backbone):
    model, windows = model_and_windows(tiny_backbone)
    threads = torch.get_num_threads()

    class FailingOnTheThirdBatch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.calls = model, 0

        def forward(self, ids, mask):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("out of memory in batch 3")
            return self.inner(ids, mask)

    with pytest.raises(RuntimeError, match="batch 3"):
        window_log_probs(FailingOnTheThirdBatch(), windows, pad_id=0, batch_size=4, streams=2)
    assert torch.get_num_threads() == threads


def test_auto_streams_on_a_cpu_and_what_explicit_streams_may_ask():
    assert choose_streams(None, threads=2).streams == 2
    assert choose_streams(None, threads=8).streams == 2  # 2 streams of 4 threads
    assert choose_streams(None, threads=1).streams == 1
    assert choose_streams(None, threads=4, device="cuda").streams == 1
    assert choose_streams(None, threads=4, runtime="onnx").streams == 1
    assert choose_streams(3, threads=4).streams == 3
    with pytest.raises(ConfigError, match="streams: 3 streams need at least"):
        choose_streams(3, threads=2)
    with pytest.raises(ConfigError, match="streams: 2 concurrent batches apply to the torch"):
        choose_streams(2, threads=4, device="cuda")
    with pytest.raises(ConfigError, match="streams: must be >= 1"):
        choose_streams(0, threads=4)
