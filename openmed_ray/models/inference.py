"""Batched forward passes over windows: length-sorted, dynamically padded, inference mode.

Used by evaluation during training and by the annotation engine, so both see exactly the
same predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from openmed_ray.errors import ConfigError
from openmed_ray.text.windows import EncodedWindow, stitch


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), right-padded to the longest sequence."""
    width = max((len(s) for s in sequences), default=0)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids.to(device), mask.to(device)


AGGREGATIONS = ("first", "average", "max", "simple")
# What one more forward pass costs, in padded wordpieces, when length-sorted windows are cut
# into batches (its fixed overhead: kernel launches, a compiled graph's guards, smaller GEMMs).
BATCH_COST_WORDPIECES = 64
AUTO_CPU_STREAMS = 2


@dataclass(frozen=True)
class StreamsChoice:
    streams: int
    reason: str


def choose_streams(
    requested: int | None, *, threads: int, device: str = "cpu", runtime: str = "torch"
) -> StreamsChoice:
    """How many batches one process keeps in flight, each on `threads // streams` threads.

    On a CPU two batches on one thread each beat one batch on two threads (1.37x with MiniLM
    on 2 cores, benchmarks/annotate_throughput.py): a thread pool splits each matmul and
    waits for its slowest part, while independent batches never wait on each other; torch
    releases the GIL inside its kernels. A GPU runs one stream, and the onnx runtime
    threads its own session. `requested` None is auto."""
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"streams: must be >= 1, got {requested}")
        if requested > 1 and (device != "cpu" or runtime != "torch"):
            raise ConfigError(
                f"streams: {requested} concurrent batches apply to the torch runtime on a CPU "
                f"(this run: {runtime} on {device}); use 1"
            )
        if requested > threads:
            raise ConfigError(
                f"streams: {requested} streams need at least as many torch threads (each "
                f"runs on one or more), and there are {threads}"
            )
        return StreamsChoice(requested, "requested")
    if device != "cpu" or runtime != "torch":
        return StreamsChoice(1, f"auto: one stream for {runtime} on {device}")
    streams = min(AUTO_CPU_STREAMS, threads)
    if streams == 1:
        return StreamsChoice(1, "auto: one torch thread")
    return StreamsChoice(streams, f"auto: {streams} streams sharing {threads} threads")


def length_batches(
    lengths: Sequence[int], max_batch: int, batch_cost: float = BATCH_COST_WORDPIECES
) -> list[list[int]]:
    """Indices grouped into batches of at most `max_batch` that minimise the padded wordpieces
    plus `batch_cost` per batch.

    The indices are sorted by length (stable) and cut by dynamic programming: a batch of
    sorted positions (i, j] costs `lengths[j] * (j - i) + batch_cost`, as every row is padded
    to the longest. Fixed-size chunks of the sorted order waste most where lengths spread
    out (the long tail of sentences); predictions do not depend on the batching.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    ordered = np.asarray([lengths[i] for i in order], dtype=np.float64)
    best = np.zeros(len(order) + 1)
    start = np.zeros(len(order) + 1, dtype=np.int64)
    for end in range(1, len(order) + 1):
        first = max(0, end - max_batch)
        costs = best[first:end] + ordered[end - 1] * (end - np.arange(first, end)) + batch_cost
        k = int(np.argmin(costs))
        best[end], start[end] = costs[k], first + k
    batches, end = [], len(order)
    while end > 0:
        batches.append(order[start[end] : end])
        end = int(start[end])
    return batches[::-1]


def pool_word_pieces(
    window: EncodedWindow, piece_log_probs: np.ndarray, aggregation: str
) -> np.ndarray:
    """Word-level log-probabilities from every wordpiece of each owned word.

    `first` (and `simple`, its HF-compatible name here: the engine decodes whole words) uses
    the first piece, the only one trained; `average` averages the pieces' probabilities;
    `max` takes the piece with the most confident prediction.
    """
    if aggregation in ("first", "simple"):
        return piece_log_probs[window.first_piece_positions]
    rows = []
    word_ids = window.word_ids
    for word, first in zip(window.owned_words, window.first_piece_positions, strict=True):
        end = first + 1
        while end < len(word_ids) and word_ids[end] == word:
            end += 1
        pieces = piece_log_probs[first:end]
        if aggregation == "average":
            rows.append(np.log(np.exp(pieces).mean(axis=0)))
        else:
            rows.append(pieces[pieces.max(axis=1).argmax()])
    return np.stack(rows) if rows else piece_log_probs[:0]


def head_log_softmax(logits: torch.Tensor, head_sizes: Sequence[int] | None) -> torch.Tensor:
    """Log-softmax over each head's slice of the last dimension (one head: all of it)."""
    if not head_sizes or len(head_sizes) == 1:
        return torch.log_softmax(logits, dim=-1)
    parts = torch.split(logits, list(head_sizes), dim=-1)
    return torch.cat([torch.log_softmax(part, dim=-1) for part in parts], dim=-1)


def pool_heads(
    window: EncodedWindow,
    piece_log_probs: np.ndarray,
    aggregation: str,
    head_sizes: Sequence[int] | None,
) -> np.ndarray:
    """`pool_word_pieces` per head: `max` picks each head's most confident piece."""
    if aggregation != "max" or not head_sizes or len(head_sizes) == 1:
        return pool_word_pieces(window, piece_log_probs, aggregation)
    bounds = np.cumsum([0, *head_sizes])
    return np.hstack(
        [
            pool_word_pieces(window, piece_log_probs[:, lo:hi], aggregation)
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        ]
    )


def window_log_probs(
    model: torch.nn.Module,
    windows: Sequence[EncodedWindow],
    *,
    pad_id: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    aggregation: str = "first",
    head_sizes: Sequence[int] | None = None,
    streams: int = 1,
) -> list[np.ndarray]:
    """Per window, log-probabilities (n_owned_words, n_labels), one row per owned word.

    At most `batch_size` windows go into one forward pass, grouped by `length_batches`,
    with `streams` passes in flight at once (`choose_streams`). With `head_sizes` the
    model's logits hold several heads side by side; each head's slice is normalised on its
    own."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    results: list[np.ndarray | None] = [None] * len(windows)

    def run(chunk: list[int]) -> None:
        with torch.inference_mode():  # thread-local: the streams' threads enter it too
            ids, mask = pad_batch([windows[i].input_ids for i in chunk], pad_id, device)
            log_probs = head_log_softmax(model(ids, mask).float(), head_sizes).cpu().numpy()
        for row, index in enumerate(chunk):
            window = windows[index]
            results[index] = pool_heads(
                window, log_probs[row, : len(window.input_ids)], aggregation, head_sizes
            )

    lengths = [len(w.input_ids) for w in windows]
    chunks = length_batches(lengths, batch_size)
    was_training = model.training
    model.eval()
    try:
        if streams == 1 or len(chunks) == 1:
            for chunk in chunks:
                run(chunk)
        else:
            _run_streams(run, chunks, lengths, streams)
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def _run_streams(run, chunks: list[list[int]], lengths: list[int], streams: int) -> None:
    """`run` over the chunks on `streams` threads sharing the process's torch threads."""
    threads = torch.get_num_threads()
    # Global, but every stream wants the same count; a new thread takes it up lazily.
    torch.set_num_threads(max(1, threads // streams))
    # The costliest batches first, so the streams finish together; a batch is a run of the
    # length-sorted order, so its last window is its longest.
    chunks = sorted(chunks, key=lambda c: -len(c) * lengths[c[-1]])
    try:
        with ThreadPoolExecutor(streams, thread_name_prefix="forward") as pool:
            for _ in pool.map(run, chunks):  # re-raises the first failed batch's error
                pass
    finally:
        torch.set_num_threads(threads)


def sentence_log_probs(
    model: torch.nn.Module,
    windows_per_sentence: Sequence[Sequence[EncodedWindow]],
    n_words: Sequence[int],
    *,
    pad_id: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    aggregation: str = "first",
    head_sizes: Sequence[int] | None = None,
    streams: int = 1,
) -> list[np.ndarray]:
    """Per sentence, log-probabilities (n_words, n_labels), stitched across its windows."""
    flat = [w for windows in windows_per_sentence for w in windows]
    per_window = window_log_probs(
        model,
        flat,
        pad_id=pad_id,
        batch_size=batch_size,
        device=device,
        aggregation=aggregation,
        head_sizes=head_sizes,
        streams=streams,
    )
    out, cursor = [], 0
    for windows, count in zip(windows_per_sentence, n_words, strict=True):
        values = per_window[cursor : cursor + len(windows)]
        cursor += len(windows)
        rows = stitch(count, windows, [list(v) for v in values])
        n_labels = per_window[0].shape[1] if per_window else 0
        out.append(np.stack(rows) if rows else np.zeros((0, n_labels), dtype=np.float32))
    return out
