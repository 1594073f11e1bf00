"""Benchmark sentences to training windows: label sets, checks, encoding, sharded batches."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from openmed_ray.errors import OpenMedError
from openmed_ray.io.iob import Sentence
from openmed_ray.text.windows import EncodedWindow, WindowSpec, encode_batch


class TrainingDataError(OpenMedError):
    """The dataset cannot be trained on as given (empty split, unseen labels, ...)."""


def label_list(sentences: Sequence[Sentence]) -> list[str]:
    """`O` first, then B-/I- for every entity type seen, types sorted for a stable head order."""
    types = sorted({tag[2:] for s in sentences for tag in s.tags if tag != "O"})
    return ["O"] + [f"{prefix}-{t}" for t in types for prefix in ("B", "I")]


def check_splits(dataset_name: str, splits: dict[str, Sequence[Sentence]]) -> list[str]:
    """Labels from train; fail clearly on an empty train split or labels unseen in train."""
    train = splits.get("train", [])
    if not train:
        raise TrainingDataError(f"{dataset_name}: the training split has no sentences")
    labels = label_list(train)
    if len(labels) == 1:
        raise TrainingDataError(f"{dataset_name}: the training split has no entity tags")
    known = set(labels)
    for split, sentences in splits.items():
        unseen = sorted({tag for s in sentences for tag in s.tags} - known)
        if unseen:
            raise TrainingDataError(
                f"{dataset_name}: {split} has label(s) {unseen} that never occur in train; "
                "the head cannot predict them. Fix the data or merge the types."
            )
    return labels


def encode_sentences(
    tokenizer,
    sentences: Sequence[Sentence],
    label_to_id: dict[str, int] | None,
    spec: WindowSpec,
    chunk: int = 2048,
) -> list[list[EncodedWindow]]:
    """Windows per sentence; labels on each word's first piece when label_to_id is given."""
    out: list[list[EncodedWindow]] = []
    for begin in range(0, len(sentences), chunk):
        part = sentences[begin : begin + chunk]
        labels = (
            [[label_to_id[t] for t in s.tags] for s in part] if label_to_id is not None else None
        )
        out.extend(encode_batch(tokenizer, [list(s.tokens) for s in part], labels, spec))
    return out


@dataclass
class TrainBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor


def epoch_batches(
    windows: Sequence[EncodedWindow],
    *,
    global_batch_size: int,
    rank: int,
    world_size: int,
    epoch: int,
    seed: int,
    pad_id: int,
    group_by_length: bool = True,
) -> list[TrainBatch]:
    """This rank's batches for one epoch.

    Every rank shuffles with the same seed, the order is padded (by wrapping around) to a
    multiple of the world size, and rank r takes every world_size-th window, so all ranks
    run the same number of steps and together see each window once.

    With `group_by_length`, windows are sorted by length inside shuffled groups of 50
    batches before batching, and the batches are shuffled again: batches stay random but
    carry little padding, which halves the compute of an epoch on short-sentence corpora.
    """
    rng = np.random.default_rng(seed + epoch)
    order = rng.permutation(len(windows))
    padded = math.ceil(len(order) / world_size) * world_size
    order = np.resize(order, padded)
    shard = order[rank::world_size]
    per_rank = max(1, global_batch_size // world_size)
    if group_by_length:
        group = per_rank * 50
        shard = (
            np.concatenate(
                [
                    sorted(shard[i : i + group], key=lambda k: len(windows[k].input_ids))
                    for i in range(0, len(shard), group)
                ]
            )
            if len(shard)
            else shard
        )
    starts = list(range(0, len(shard), per_rank))
    if group_by_length:
        starts = [starts[i] for i in rng.permutation(len(starts))]
    batches = []
    for begin in starts:
        chunk = [windows[i] for i in shard[begin : begin + per_rank]]
        width = max(len(w.input_ids) for w in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        for row, window in enumerate(chunk):
            n = len(window.input_ids)
            ids[row, :n] = torch.as_tensor(window.input_ids)
            mask[row, :n] = 1
            labels[row, :n] = torch.as_tensor(window.labels)
        batches.append(TrainBatch(ids, mask, labels))
    return batches


def steps_per_epoch(n_windows: int, global_batch_size: int, world_size: int) -> int:
    per_rank = max(1, global_batch_size // world_size)
    return math.ceil(math.ceil(n_windows / world_size) / per_rank)


def mixed_batch_schedule(
    batch_counts: Sequence[int], sampling: str, temperature: float, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """One epoch's (task, batch index) order over several tasks' batch lists (see SAMPLINGS).

    The epoch has as many steps as the tasks have batches together; only the share of each
    task changes. A task given more steps than it has batches cycles through them again (a
    fresh permutation each pass), one given fewer takes a random subset. The order depends
    only on `rng`, so every rank of a DDP run follows the same schedule.
    """
    counts = np.asarray(batch_counts, dtype=float)
    total = int(counts.sum())
    if sampling == "proportional":
        shares = counts.astype(int)
    else:
        weights = (
            counts ** (1.0 / temperature) if sampling == "temperature" else np.ones_like(counts)
        )
        raw = total * weights / weights.sum()
        shares = np.floor(raw).astype(int)
        # Largest remainders get the steps rounding left over, so the total is exact.
        for task in np.argsort(shares - raw)[: total - int(shares.sum())]:
            shares[task] += 1
    picks: list[list[tuple[int, int]]] = []
    for task, (count, share) in enumerate(zip(batch_counts, shares, strict=True)):
        passes = -(-int(share) // count) if count else 0
        order = np.concatenate([rng.permutation(count) for _ in range(passes)]) if passes else []
        picks.append([(task, int(i)) for i in order[:share]])
    if sampling == "round-robin":
        interleaved = []
        for step in range(max((len(p) for p in picks), default=0)):
            interleaved += [p[step] for p in picks if step < len(p)]
        return interleaved
    flat = [pick for task_picks in picks for pick in task_picks]
    return [flat[i] for i in rng.permutation(len(flat))]
