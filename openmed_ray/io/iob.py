"""CoNLL-style IOB2 TSV: one `token<TAB>tag` per line, blank lines between sentences.

`-DOCSTART-` lines (JNLPBA) mark documents; they are skipped but the document index is
kept on each sentence. Every malformed line raises a DataFormatError naming file and line.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from openmed_ray.errors import DataFormatError

DOCSTART = "-DOCSTART-"


@dataclass(frozen=True, slots=True)
class Sentence:
    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    line: int  # 1-based line of the first token in the source file
    document: int = 0  # index of the -DOCSTART- document the sentence belongs to

    def __len__(self) -> int:
        return len(self.tokens)


def parse_tag(tag: str) -> tuple[str, str | None]:
    """Split an IOB2 tag into (prefix, type): `O` -> ("O", None), `B-Disease` -> ("B", "Disease")."""
    if tag == "O":
        return "O", None
    prefix, sep, entity_type = tag.partition("-")
    if sep and prefix in ("B", "I") and entity_type and entity_type.strip() == entity_type:
        return prefix, entity_type
    raise ValueError(f"bad tag {tag!r}: expected 'O', 'B-<type>' or 'I-<type>'")


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def iter_iob2(path: str | Path) -> Iterator[Sentence]:
    """Yield sentences from an IOB2 TSV file (plain or .gz)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IOB2 file not found: {path}")
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0
    document = 0
    seen_docstart = False
    with _open_text(path) as handle:
        try:
            for number, raw in enumerate(handle, start=1):
                line = raw.rstrip("\r\n")
                if not line.strip():
                    if tokens:
                        yield Sentence(tuple(tokens), tuple(tags), first_line, document)
                        tokens, tags = [], []
                    continue
                columns = line.split("\t")
                if columns[0] == DOCSTART:
                    if tokens:
                        raise DataFormatError(
                            path,
                            number,
                            "-DOCSTART- inside a sentence; a blank line must precede it",
                        )
                    document += seen_docstart
                    seen_docstart = True
                    continue
                if len(columns) != 2:
                    raise DataFormatError(
                        path,
                        number,
                        f"expected 2 TAB-separated columns (token<TAB>tag), found {len(columns)}: "
                        f"{line[:80]!r}",
                    )
                token, tag = columns
                if not token or token.strip() != token:
                    raise DataFormatError(path, number, f"empty or space-padded token {token!r}")
                try:
                    parse_tag(tag)
                except ValueError as exc:
                    raise DataFormatError(path, number, str(exc)) from None
                if not tokens:
                    first_line = number
                tokens.append(token)
                tags.append(tag)
        except UnicodeDecodeError as exc:
            raise DataFormatError(path, None, f"not valid UTF-8: {exc}") from None
    if tokens:
        yield Sentence(tuple(tokens), tuple(tags), first_line, document)


def read_iob2(path: str | Path) -> list[Sentence]:
    """Read every sentence of an IOB2 TSV file."""
    return list(iter_iob2(path))


def write_iob2(path: str | Path, sentences: Iterable[tuple[Sequence[str], Sequence[str]]]) -> None:
    """Write (tokens, tags) pairs as IOB2 TSV, one blank line after each sentence."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for index, (tokens, tags) in enumerate(sentences):
            if len(tokens) != len(tags):
                raise ValueError(f"sentence {index}: {len(tokens)} tokens but {len(tags)} tags")
            for token, tag in zip(tokens, tags, strict=True):
                handle.write(f"{token}\t{tag}\n")
            handle.write("\n")
