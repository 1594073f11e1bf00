"""Documents with linked mentions, and the entity pairs a relation classifier scores.

An entity is a (type, key) pair: the key is the concept a mention is linked to (a MeSH ID
in BC5CDR, the linker's node ID in the KG job). Every mention of the task's head type and
every mention of its tail type forms a candidate pair per document, so cross-sentence
pairs are candidates like any other: the model sees the whole document.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from openmed_ray.errors import OpenMedError
from openmed_ray.io.pubtator import PubTatorDocument

NO_RELATION = "none"


class RelationDataError(OpenMedError):
    """Input that cannot be turned into relation examples (bad offsets, unknown labels)."""


@dataclass(frozen=True, slots=True)
class RelationTask:
    """Which entity types a relation joins, and its labels (`none` first)."""

    name: str
    head_type: str
    tail_type: str
    relations: tuple[str, ...]

    @property
    def labels(self) -> list[str]:
        return [NO_RELATION, *self.relations]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "head_type": self.head_type,
            "tail_type": self.tail_type,
            "relations": list(self.relations),
        }

    @classmethod
    def from_dict(cls, data: dict) -> RelationTask:
        return cls(data["name"], data["head_type"], data["tail_type"], tuple(data["relations"]))


CID_TASK = RelationTask("cid", "Chemical", "Disease", ("CID",))


@dataclass(frozen=True, slots=True)
class LinkedMention:
    start: int
    end: int
    type: str
    key: str


@dataclass
class RelationDocument:
    doc_id: str
    text: str
    mentions: list[LinkedMention]
    # (head key, tail key) -> relation label, for gold documents; empty otherwise
    relations: dict[tuple[str, str], str] = field(default_factory=dict)

    def entities(self, entity_type: str) -> list[str]:
        """Distinct keys of this type, in order of first mention."""
        return list(dict.fromkeys(m.key for m in self.mentions if m.type == entity_type))

    def candidate_pairs(self, task: RelationTask) -> list[tuple[str, str]]:
        heads, tails = self.entities(task.head_type), self.entities(task.tail_type)
        return [(h, t) for h in heads for t in tails if h != t]


def check_mentions(document: RelationDocument) -> None:
    """Mentions must lie inside the text; a clear error names the document and the span."""
    for mention in document.mentions:
        if not 0 <= mention.start < mention.end <= len(document.text):
            raise RelationDataError(
                f"document {document.doc_id}: mention {mention.start}..{mention.end} "
                f"({mention.type} {mention.key}) is outside its text of {len(document.text)} chars"
            )


def from_pubtator(
    documents: Iterable[PubTatorDocument], task: RelationTask
) -> list[RelationDocument]:
    """Gold relation documents: one mention per concept ID (composite mentions give several);
    mentions without a concept cannot take part in a relation and are left out."""
    out = []
    types = {task.head_type, task.tail_type}
    for doc in documents:
        mentions = [
            LinkedMention(m.start, m.end, m.type, key)
            for m in doc.mentions
            if m.type in types
            for key in m.ids
        ]
        relations = {
            (r.source_id, r.target_id): r.type for r in doc.relations if r.type in task.relations
        }
        document = RelationDocument(doc.pmid, doc.text, mentions, relations)
        check_mentions(document)
        out.append(document)
    return out


def gold_triples(documents: Sequence[RelationDocument]) -> set[tuple[str, str, str, str]]:
    """(doc_id, head key, tail key, relation) for every gold relation."""
    return {(d.doc_id, h, t, label) for d in documents for (h, t), label in d.relations.items()}


def reachable_share(documents: Sequence[RelationDocument], task: RelationTask) -> float:
    """Share of gold relations whose two entities are both mentioned (the recall ceiling)."""
    total = hit = 0
    for document in documents:
        candidates = set(document.candidate_pairs(task))
        for pair in document.relations:
            total += 1
            hit += pair in candidates
    return hit / total if total else 1.0
