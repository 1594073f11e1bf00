"""The relation classifier: an encoder over marked documents and a pair head.

Mentions are read at their start markers. Two ways to score an entity pair (the card's
`pair_scoring`):
- `mention-pairs` (BRAN-style, the default): the head scores every pair of a head-entity
  mention and a tail-entity mention from both mentions, their product, the document's [CLS]
  vector and an embedding of their sentence distance; the entity pair's score per relation
  is the log-sum-exp of its mention pairs' scores (a smooth max: one clear statement is
  enough). Which chemical goes with which disease is read where they are mentioned together.
- `entities`: each entity is the log-sum-exp of its mention vectors and the head scores the
  two pooled entities once (the first shipped `cid`).
Either way the same head scores single mention pairs, which picks the evidence sentence of
a predicted relation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from openmed_ray.config import PAIR_SCORINGS, LoraConfig
from openmed_ray.models.backbones import load_tokenizer, resolve_backbone
from openmed_ray.models.bundle import (
    HEAD_FILE,
    BundleError,
    bundle_version,
    is_bundle,
    load_bundle_encoder,
    load_head,
    read_card,
    read_labels,
)
from openmed_ray.models.classifier import EncoderWithHead, adapt_encoder, load_encoder
from openmed_ray.models.inference import pad_batch
from openmed_ray.models.warm_start import encoder_fields, load_encoder_weights, require_same
from openmed_ray.relations.encoding import EncodedRelationDocument
from openmed_ray.relations.examples import RelationTask


@dataclass
class RelationBatch:
    input_ids: torch.Tensor  # (windows, length)
    attention_mask: torch.Tensor
    window_document: torch.Tensor  # (windows,) document index of each window
    mention_window: torch.Tensor  # (mentions,) global window index
    mention_position: torch.Tensor  # (mentions,)
    mention_entity: torch.Tensor  # (mentions,) global entity index
    entity_document: torch.Tensor  # (entities,)
    pair_head: torch.Tensor  # (pairs,) global entity index
    pair_tail: torch.Tensor
    # Every (head mention, tail mention) pair of every candidate pair:
    link_head: torch.Tensor  # (links,) global mention index
    link_tail: torch.Tensor
    link_pair: torch.Tensor  # (links,) global pair index
    link_distance: torch.Tensor  # (links,) sentence distance bucket
    labels: torch.Tensor | None  # (pairs,)
    n_documents: int

    def to(self, device: torch.device | str) -> RelationBatch:
        moved = {
            name: value.to(device) if isinstance(value, torch.Tensor) else value
            for name, value in self.__dict__.items()
        }
        return RelationBatch(**moved)


DISTANCE_BUCKETS = 5  # sentence distance of two mentions: 0 (same sentence), 1, 2, 3, 4+


@dataclass
class MentionLinks:
    """One document's (head mention, tail mention) pairs, per candidate pair in order."""

    heads: list[int]
    tails: list[int]
    pairs: list[int]
    distances: list[int]


def mention_links(document: EncodedRelationDocument) -> MentionLinks:
    by_entity: dict[int, list[int]] = {}
    for mention, entity in enumerate(document.mention_entity):
        by_entity.setdefault(entity, []).append(mention)
    links = MentionLinks([], [], [], [])
    sentence = document.mention_sentence
    for pair, (h, t) in enumerate(document.pairs):
        for i in by_entity[h]:
            for j in by_entity[t]:
                links.heads.append(i)
                links.tails.append(j)
                links.pairs.append(pair)
                links.distances.append(min(abs(sentence[i] - sentence[j]), DISTANCE_BUCKETS - 1))
    return links


def collate(documents: Sequence[EncodedRelationDocument], pad_id: int) -> RelationBatch:
    """Stack the windows of several documents and offset their mention/entity/pair indices."""
    windows: list[list[int]] = []
    window_document, mention_window, mention_position, mention_entity = [], [], [], []
    entity_document, pair_head, pair_tail, labels = [], [], [], []
    link_head, link_tail, link_pair, link_distance = [], [], [], []
    has_labels = all(d.labels is not None for d in documents)
    for index, doc in enumerate(documents):
        window_base, entity_base = len(windows), len(entity_document)
        mention_base, pair_base = len(mention_window), len(pair_head)
        links = mention_links(doc)
        link_head.extend(mention_base + i for i in links.heads)
        link_tail.extend(mention_base + j for j in links.tails)
        link_pair.extend(pair_base + k for k in links.pairs)
        link_distance.extend(links.distances)
        windows.extend(doc.windows)
        window_document.extend([index] * len(doc.windows))
        mention_window.extend(window_base + w for w in doc.mention_window)
        mention_position.extend(doc.mention_position)
        mention_entity.extend(entity_base + e for e in doc.mention_entity)
        entity_document.extend([index] * len(doc.entities))
        pair_head.extend(entity_base + h for h, _ in doc.pairs)
        pair_tail.extend(entity_base + t for _, t in doc.pairs)
        if has_labels:
            labels.extend(doc.labels or [])
    input_ids, attention_mask = pad_batch(windows, pad_id)

    def longs(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long)

    return RelationBatch(
        input_ids,
        attention_mask,
        longs(window_document),
        longs(mention_window),
        longs(mention_position),
        longs(mention_entity),
        longs(entity_document),
        longs(pair_head),
        longs(pair_tail),
        longs(link_head),
        longs(link_tail),
        longs(link_pair),
        longs(link_distance),
        longs(labels) if has_labels else None,
        len(documents),
    )


def logsumexp_pool(values: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Per-group log-sum-exp over rows of `values` (rows of a group need not be adjacent)."""
    index = groups.unsqueeze(1).expand_as(values)
    peak = torch.full(
        (n_groups, values.shape[1]), float("-inf"), dtype=values.dtype, device=values.device
    )
    peak = peak.scatter_reduce(0, index, values, reduce="amax", include_self=True).detach()
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    summed = torch.zeros_like(peak).index_add(0, groups, torch.exp(values - peak[groups]))
    return peak + torch.log(summed.clamp_min(torch.finfo(values.dtype).tiny))


class PairHead(nn.Module):
    def __init__(
        self, hidden: int, num_labels: int, dropout: float, distance_buckets: int = 0
    ) -> None:
        super().__init__()
        self.head_proj = nn.Linear(hidden, hidden)
        self.tail_proj = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Linear(4 * hidden, hidden)
        self.output = nn.Linear(hidden, num_labels)
        self.distance = None
        if distance_buckets:
            # Added to the context vector; zero at the start, so it only learns what helps.
            self.distance = nn.Embedding(distance_buckets, hidden)
            nn.init.zeros_(self.distance.weight)

    def forward(
        self,
        heads: torch.Tensor,
        tails: torch.Tensor,
        context: torch.Tensor,
        distances: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.distance is not None and distances is not None:
            context = context + self.distance(distances)
        h = torch.tanh(self.head_proj(heads))
        t = torch.tanh(self.tail_proj(tails))
        features = self.dropout(torch.cat([h, t, h * t, context], dim=-1))
        return self.output(self.dropout(nn.functional.gelu(self.hidden(features))))


class RelationClassifier(EncoderWithHead):
    def __init__(
        self,
        encoder: nn.Module,
        num_labels: int,
        dropout: float = 0.1,
        pair_scoring: str = "entities",
    ) -> None:
        super().__init__()
        if pair_scoring not in PAIR_SCORINGS:
            raise ValueError(f"pair_scoring must be one of {PAIR_SCORINGS}, got {pair_scoring!r}")
        self.encoder = encoder
        self.pair_scoring = pair_scoring
        buckets = DISTANCE_BUCKETS if pair_scoring == "mention-pairs" else 0
        self.head = PairHead(encoder.config.hidden_size, num_labels, dropout, buckets)

    def head_state(self) -> dict[str, torch.Tensor]:
        return {f"head.{k}": v for k, v in self.head.state_dict().items()}

    def encode(self, batch: RelationBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(mention vectors, per-document context vectors)."""
        hidden = self.encoder(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask
        ).last_hidden_state
        mentions = hidden[batch.mention_window, batch.mention_position]
        cls = hidden[:, 0]
        context = torch.zeros(
            batch.n_documents, cls.shape[1], dtype=cls.dtype, device=cls.device
        ).index_add(0, batch.window_document, cls)
        counts = torch.bincount(batch.window_document, minlength=batch.n_documents).clamp_min(1)
        return mentions, context / counts.unsqueeze(1).to(cls.dtype)

    def forward(self, batch: RelationBatch) -> torch.Tensor:
        """Logits per candidate pair, (pairs, labels)."""
        mentions, context = self.encode(batch)
        return self.pair_logits(batch, mentions, context)

    def pair_logits(
        self, batch: RelationBatch, mentions: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        pair_document = batch.entity_document[batch.pair_head]
        if self.pair_scoring == "entities":
            n_entities = len(batch.entity_document)
            entities = logsumexp_pool(mentions, batch.mention_entity, n_entities)
            return self.head(
                entities[batch.pair_head], entities[batch.pair_tail], context[pair_document]
            )
        links = self.head(
            mentions[batch.link_head],
            mentions[batch.link_tail],
            context[pair_document[batch.link_pair]],
            batch.link_distance,
        )
        # Each relation's margin over `none`, pooled over the pair's mention pairs; `none`
        # stays at 0, so a softmax over the result is the pair's label distribution.
        margins = links[:, 1:] - links[:, :1]
        pooled = logsumexp_pool(margins, batch.link_pair, len(batch.pair_head))
        return torch.cat([torch.zeros_like(pooled[:, :1]), pooled], dim=-1)

    def score_mention_pairs(
        self,
        mentions: torch.Tensor,
        context: torch.Tensor,
        links: MentionLinks,
        document: int,
    ) -> torch.Tensor:
        """Logits for single mention pairs of one document (`links`: its mention indices)."""
        heads, tails = torch.tensor(links.heads), torch.tensor(links.tails)
        return self.head(
            mentions[heads],
            mentions[tails],
            context[document].expand(len(links.heads), -1),
            torch.tensor(links.distances),
        )


def build_relation_classifier(
    backbone_dir: str | Path,
    num_labels: int,
    lora: LoraConfig | None,
    dropout: float = 0.1,
    gradient_checkpointing: bool = False,
    pair_scoring: str = "mention-pairs",
) -> RelationClassifier:
    """A fresh relation classifier; with `lora` only LoRA and the pair head train."""
    encoder = adapt_encoder(load_encoder(backbone_dir), lora, gradient_checkpointing)
    return RelationClassifier(encoder, num_labels, dropout, pair_scoring)


def check_warm_start(
    directory: Path,
    *,
    backbone: str,
    method: str,
    lora: LoraConfig,
    pair_scoring: str,
    labels: list[str],
) -> dict:
    """The card of the relation bundle a new run starts from, after checking that its weights
    fit the model that run builds; else a BundleError naming the bundle and the field."""
    card = read_relation_card(directory)
    fields = encoder_fields(card, backbone=backbone, method=method, lora=lora)
    fields["pair_scoring"] = (
        card.get("hyperparameters", {}).get("pair_scoring", "entities"),
        pair_scoring,
    )
    fields["labels"] = (read_labels(directory), labels)
    require_same(directory, fields)
    return card


def load_warm_start(model: RelationClassifier, directory: Path) -> None:
    """Copy a checked bundle's trained weights (LoRA or encoder, and the pair head) into a
    freshly built classifier whose LoRA is not merged, so training continues from them."""
    load_encoder_weights(model, directory)
    model.head.load_state_dict(load_head(directory))


@dataclass
class PairPredictions:
    """One document's predictions: label probabilities per candidate pair, (pairs, labels),
    and per pair the (head, tail) mention pair the head scores highest (the evidence)."""

    probabilities: np.ndarray
    best_mentions: np.ndarray  # (pairs, 2): indices into the document's mentions


def _best_mention_pairs(
    model: RelationClassifier,
    document: EncodedRelationDocument,
    mentions: torch.Tensor,
    context: torch.Tensor,
    index: int,
) -> np.ndarray:
    """For each candidate pair: the mention pair with the highest relation probability."""
    links = mention_links(document)
    logits = model.score_mention_pairs(mentions, context, links, index)
    related = 1.0 - torch.softmax(logits.float(), dim=-1)[:, 0].cpu().numpy()
    best = np.zeros((len(document.pairs), 2), dtype=np.int64)
    best_score = np.full(len(document.pairs), -1.0)
    for k, pair in enumerate(links.pairs):
        if related[k] > best_score[pair]:
            best_score[pair] = related[k]
            best[pair] = (links.heads[k], links.tails[k])
    return best


@torch.inference_mode()
def predict_pairs(
    model: RelationClassifier,
    documents: Sequence[EncodedRelationDocument],
    *,
    pad_id: int,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    evidence: bool = False,
) -> list[PairPredictions]:
    """Predictions per document, in input order; `evidence` also picks each pair's best
    mention pair. Documents are batched by length so padding stays small."""
    was_training = model.training
    model.eval()
    n_labels = model.head.output.out_features
    empty = PairPredictions(
        np.zeros((0, n_labels), dtype=np.float32), np.zeros((0, 2), dtype=np.int64)
    )
    out = [empty] * len(documents)
    by_length = sorted(range(len(documents)), key=lambda i: documents[i].n_wordpieces)
    order = [i for i in by_length if documents[i].pairs]
    for begin in range(0, len(order), batch_size):
        chosen = order[begin : begin + batch_size]
        batch = collate([documents[i] for i in chosen], pad_id).to(device)
        mentions, context = model.encode(batch)
        probabilities = torch.softmax(model.pair_logits(batch, mentions, context).float(), -1)
        probabilities = probabilities.cpu().numpy()
        at = mention_at = 0
        for position, i in enumerate(chosen):
            document = documents[i]
            n, m = len(document.pairs), len(document.mention_entity)
            best = (
                _best_mention_pairs(
                    model, document, mentions[mention_at : mention_at + m], context, position
                )
                if evidence
                else np.zeros((n, 2), dtype=np.int64)
            )
            out[i] = PairPredictions(probabilities[at : at + n], best)
            at += n
            mention_at += m
    model.train(was_training)
    return out


@dataclass
class RelationBundle:
    path: Path
    model: RelationClassifier
    tokenizer: object
    task: RelationTask
    card: dict
    version: str

    @property
    def name(self) -> str:
        return self.card.get("name") or self.path.name

    @property
    def threshold(self) -> float:
        return float(self.card.get("threshold", 0.5))

    def window(self) -> tuple[int, int]:
        """(max_length, overlap) the bundle was trained with."""
        hyperparameters = self.card.get("hyperparameters", {})
        return int(hyperparameters.get("max_length", 512)), int(hyperparameters.get("overlap", 128))


def read_relation_card(directory: Path) -> dict:
    """The card of a relation bundle; a BundleError for any other directory."""
    card = read_card(directory) if is_bundle(directory) else {}
    if card.get("task") != "relation":
        raise BundleError(
            f"{directory} is not a relation bundle: it needs {HEAD_FILE}, labels.json and a "
            "card.json with task 'relation' (NER adapters go to `annotate --adapters`)"
        )
    return card


def load_relation_bundle(directory: str | Path, *, backbone: str | None = None) -> RelationBundle:
    """A relation bundle's classifier (LoRA merged), in eval mode on the CPU."""
    directory = Path(directory)
    card = read_relation_card(directory)
    labels = read_labels(directory)
    task = RelationTask.from_dict(card["relation_task"])
    if labels != task.labels:
        raise BundleError(
            f"{directory}: labels.json {labels} disagree with the card's task labels {task.labels}"
        )
    encoder, backbone_spec = load_bundle_encoder(directory, card, backbone)
    # Bundles from before the choice existed scored pooled entities.
    pair_scoring = card.get("hyperparameters", {}).get("pair_scoring", "entities")
    model = RelationClassifier(encoder, len(labels), pair_scoring=pair_scoring)
    model.head.load_state_dict(load_head(directory))
    model.merge_lora()
    model.float().eval()
    tokenizer = load_tokenizer(resolve_backbone(backbone_spec))
    return RelationBundle(directory, model, tokenizer, task, card, bundle_version(directory))
