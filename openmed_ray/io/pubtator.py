"""PubTator files (BioCreative V CDR, NCBI-disease): titles, abstracts, mentions, relations.

    PMID|t|title
    PMID|a|abstract
    PMID<TAB>start<TAB>end<TAB>mention<TAB>type<TAB>ID[<TAB>individual mentions]
    PMID<TAB>CID<TAB>chemical-ID<TAB>disease-ID

Offsets are 0-based into `title + " " + abstract`, end exclusive. Composite IDs are joined
with `|`; `-1` means no concept. Offsets that disagree with the text are kept and reported
in `PubTatorDocument.problems` (the NCBI train file has one), or raised with `strict=True`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from openmed_ray.errors import DataFormatError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Mention:
    start: int
    end: int
    text: str
    type: str
    ids: tuple[str, ...]  # empty when the corpus gives no concept (-1)
    individual_mentions: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True, slots=True)
class Relation:
    type: str  # e.g. CID
    source_id: str
    target_id: str
    line: int = 0


@dataclass
class PubTatorDocument:
    pmid: str
    title: str = ""
    abstract: str = ""
    mentions: list[Mention] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return f"{self.title} {self.abstract}"


def _parse_ids(raw: str) -> tuple[str, ...]:
    return tuple(part for part in raw.split("|") if part and part != "-1")


def read_pubtator(path: str | Path, *, strict: bool = False) -> list[PubTatorDocument]:
    """Read a PubTator file into documents, in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PubTator file not found: {path}")
    documents: list[PubTatorDocument] = []
    current: PubTatorDocument | None = None

    def document_for(pmid: str, number: int) -> PubTatorDocument:
        if current is None or current.pmid != pmid:
            raise DataFormatError(
                path,
                number,
                f"line for PMID {pmid} outside its document (expected after its title)",
            )
        return current

    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                current = None
                continue
            head = line.split("|", 2)
            if len(head) == 3 and head[1] in ("t", "a") and "\t" not in head[0]:
                pmid, kind, content = head
                if kind == "t":
                    current = PubTatorDocument(pmid=pmid, title=content)
                    documents.append(current)
                else:
                    document_for(pmid, number).abstract = content
                continue
            columns = line.split("\t")
            if len(columns) == 4 and not columns[1].isdigit():
                pmid, rel_type, source, target = columns
                document_for(pmid, number).relations.append(
                    Relation(rel_type, source, target, number)
                )
                continue
            if len(columns) not in (5, 6, 7):
                raise DataFormatError(
                    path,
                    number,
                    f"expected a title/abstract line, a 4-column relation or a 5-7 column "
                    f"mention, found {len(columns)} columns",
                )
            pmid, start, end, text, entity_type, *rest = columns
            document = document_for(pmid, number)
            try:
                begin, finish = int(start), int(end)
            except ValueError:
                raise DataFormatError(
                    path, number, f"mention offsets must be integers, got {start!r}, {end!r}"
                ) from None
            if not 0 <= begin < finish:
                raise DataFormatError(path, number, f"bad mention offsets {begin}..{finish}")
            ids = _parse_ids(rest[0]) if rest else ()
            individual = tuple(rest[1].split("|")) if len(rest) > 1 and rest[1] else ()
            mention = Mention(begin, finish, text, entity_type, ids, individual, number)
            if document.text[begin:finish] != text:
                problem = (
                    f"{path}:{number}: mention {text!r} does not match text "
                    f"{document.text[begin:finish]!r} at {begin}..{finish}"
                )
                if strict:
                    raise DataFormatError(path, number, problem.split(": ", 1)[1])
                log.warning(problem)
                document.problems.append(problem)
            document.mentions.append(mention)
    return documents


def write_texts(documents: list[PubTatorDocument], path: str | Path) -> Path:
    """The documents' texts (title + " " + abstract, the offsets' frame) as a Parquet corpus
    with columns doc_id (the PMID) and text, the input of `annotate` and the graph's texts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"doc_id": [d.pmid for d in documents], "text": [d.text for d in documents]})
    pq.write_table(table, path)
    return path
