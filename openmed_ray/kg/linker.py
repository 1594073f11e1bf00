"""Linking mentions to ontology IDs with a dictionary, abbreviations and TF-IDF.

The dictionary maps mention strings to MeSH/OMIM IDs. The built-in one comes from the
BC5CDR and NCBI-disease PubTator **train and dev** files (never test); users add their own
TSV (`string<TAB>id<TAB>type`), whose entries win over the corpus-derived ones. A mention
of type T is looked up among T's entries only, tier by tier:

    abbreviation  the mention is a short form defined in its document ("PAN" after
                  "puromycin aminonucleoside (PAN)"): the long form through the three tiers
                  below. First, because the document's definition outranks the corpora's
                  usual meaning of an ambiguous short form.
    exact         the string as written
    case          case-folded, whitespace collapsed
    punct         case-folded, punctuation removed ("Alpha-methyl-DOPA" = "alpha methyl dopa")
    tfidf         the nearest dictionary string by cosine similarity of character 3-gram
                  TF-IDF vectors (words padded with spaces, as scispaCy's linker does), if
                  at least `threshold`; the long form stands in for a defined short form
    local         no match: the stable local ID `type:normalized text`

A string with several IDs in the corpora takes its most frequent one (ties: smallest ID).
The dictionary's version is a hash of its content, so a graph records what linked it.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from openmed_ray.config import LinkerConfig, resolve_data_root
from openmed_ray.errors import DataFormatError, OpenMedError
from openmed_ray.io.filesystem import resolve
from openmed_ray.io.pubtator import read_pubtator
from openmed_ray.kg.normalize import canonical_id, case_form, local_id, punct_form

STRING_TIERS = ("exact", "case", "punct")
TIERS = (*STRING_TIERS, "abbreviation", "tfidf")
# Train and dev splits only: the test files stay unseen for evaluation. A linker built from
# train alone links dev mentions as it links unseen text (for choosing settings on dev).
BUILTIN_SOURCES = {
    "train": (
        "normalization/BC5CDR/CDR_TrainingSet.PubTator.txt",
        "normalization/NCBI-disease/NCBItrainset_corpus.txt",
    ),
    "dev": (
        "normalization/BC5CDR/CDR_DevelopmentSet.PubTator.txt",
        "normalization/NCBI-disease/NCBIdevelopset_corpus.txt",
    ),
}
# A user entry outranks any count a corpus can give a competing ID for the same string.
USER_ENTRY_COUNT = 1 << 40
_FORMS = {"exact": str.strip, "case": case_form, "punct": punct_form}


class Link(NamedTuple):
    id: str
    tier: str  # one of TIERS, or "local"
    score: float


@dataclass(frozen=True)
class Entry:
    text: str
    id: str
    type: str
    count: int = 1


def entity_type(label: str, label_types: Mapping[str, str]) -> str:
    """The ontology type of an engine or corpus label (unknown labels stand for themselves)."""
    return label_types.get(label, label)


def pubtator_entries(path: str | Path, label_types: Mapping[str, str]) -> list[Entry]:
    """One entry per linked mention; composite mentions count through their individual
    mentions when the corpus lists one per ID, and conjunctions (`D1+D2`) are left out."""
    entries = []
    for document in read_pubtator(path):
        for mention in document.mentions:
            kind = entity_type(mention.type, label_types)
            if len(mention.ids) == 1:
                pairs = [(mention.text, mention.ids[0])]
            elif mention.ids and len(mention.individual_mentions) == len(mention.ids):
                pairs = list(zip(mention.individual_mentions, mention.ids, strict=True))
            else:
                pairs = []
            entries += [
                Entry(text, canonical_id(raw), kind)
                for text, raw in pairs
                if text.strip() and "+" not in raw
            ]
    return entries


def read_dictionary_tsv(uri: str, label_types: Mapping[str, str]) -> list[Entry]:
    """A user dictionary: `string<TAB>id<TAB>type` per line; blank and `#` lines skipped."""
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path) as stream:
            raw = stream.read()
    except FileNotFoundError:
        raise DataFormatError(uri, None, "dictionary file not found") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(uri, None, f"not UTF-8 text: {exc}") from None
    entries = []
    for number, line in enumerate(io.StringIO(text), start=1):
        line = line.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        columns = line.split("\t")
        if len(columns) != 3 or not all(c.strip() for c in columns):
            raise DataFormatError(
                uri,
                number,
                f"expected 3 non-empty tab-separated columns (string, id, type), found "
                f"{len(columns)}: {line[:80]!r}",
            )
        mention, concept, kind = (c.strip() for c in columns)
        entries.append(
            Entry(mention, canonical_id(concept), entity_type(kind, label_types), USER_ENTRY_COUNT)
        )
    return entries


def builtin_entries(
    data_root: str | Path | None,
    label_types: Mapping[str, str],
    splits: Sequence[str] = tuple(BUILTIN_SOURCES),
) -> list[Entry]:
    root = resolve_data_root(data_root)
    sources = [source for split in splits for source in BUILTIN_SOURCES[split]]
    missing = [source for source in sources if not (root / source).is_file()]
    if missing:
        raise OpenMedError(
            f"the built-in linking dictionary needs {missing[0]} under the data root {root}; "
            "set OPENMED_RAY_DATA_ROOT (or --data-root), or link with your own --dictionary "
            "files only (builtin_dictionary: false)"
        )
    return [entry for source in sources for entry in pubtator_entries(root / source, label_types)]


def _char_ngrams(form: str, n: int) -> list[str]:
    """Character n-grams of each word padded with spaces (scikit-learn's `char_wb`)."""
    grams = []
    for word in form.split():
        padded = f" {word} "
        grams += [padded[i : i + n] for i in range(max(1, len(padded) - n + 1))]
    return grams


class TfidfIndex:
    """Nearest dictionary string by cosine similarity of character n-gram TF-IDF vectors."""

    def __init__(self, forms: Sequence[str], ids: Sequence[str], n: int) -> None:
        self.n = n
        self.ids = list(ids)
        self.vocabulary: dict[str, int] = {}
        rows = [self._counts(form, grow=True) for form in forms]
        document_frequency = np.zeros(len(self.vocabulary))
        for counts in rows:
            document_frequency[list(counts)] += 1
        # scikit-learn's smooth idf, so scores compare with scispaCy's thresholds
        self.idf = np.log((1 + len(forms)) / (1 + document_frequency)) + 1
        self.matrix_t = self._matrix(rows).T.tocsr()

    def _counts(self, form: str, grow: bool = False) -> Counter[int]:
        counts: Counter[int] = Counter()
        for gram in _char_ngrams(form, self.n):
            column = self.vocabulary.get(gram)
            if column is None and grow:
                column = self.vocabulary[gram] = len(self.vocabulary)
            if column is not None:
                counts[column] += 1
        return counts

    def _matrix(self, rows: list[Counter[int]]) -> sp.csr_matrix:
        indptr, indices, values = [0], [], []
        for counts in rows:
            indices += counts.keys()
            values += counts.values()
            indptr.append(len(indices))
        matrix = sp.csr_matrix(
            (np.asarray(values, dtype=np.float64), np.asarray(indices, dtype=np.int64), indptr),
            shape=(len(rows), len(self.vocabulary)),
        )
        matrix = matrix.multiply(self.idf).tocsr()
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sp.diags(1.0 / norms) @ matrix

    def nearest(self, forms: Sequence[str], chunk: int = 512) -> list[tuple[int, float]]:
        """(index of the nearest dictionary string, cosine similarity) per query; -1 if none."""
        results: list[tuple[int, float]] = []
        for begin in range(0, len(forms), chunk):
            queries = self._matrix([self._counts(f) for f in forms[begin : begin + chunk]])
            similarity = (queries @ self.matrix_t).tocsr()
            for row in range(similarity.shape[0]):
                start, end = similarity.indptr[row], similarity.indptr[row + 1]
                if start == end:
                    results.append((-1, 0.0))
                    continue
                values = similarity.data[start:end]
                best = int(np.argmax(values))
                results.append((int(similarity.indices[start + best]), float(values[best])))
        return results


class Linker:
    """Links (mention, type[, long form]) to an ontology ID, a tier and a score."""

    def __init__(
        self,
        entries: Iterable[Entry],
        *,
        threshold: float = 0.7,
        ngram: int = 3,
        tiers: Sequence[str] = TIERS,
    ) -> None:
        self.threshold = threshold
        self.tiers = tuple(tiers)
        totals: Counter[tuple[str, str, str]] = Counter()
        for entry in entries:
            totals[(entry.type, entry.text, entry.id)] += entry.count
        types_of: dict[str, set[str]] = {}
        for kind, _, concept in totals:
            types_of.setdefault(concept, set()).add(kind)
        clashes = sorted((c, sorted(t)) for c, t in types_of.items() if len(t) > 1)
        if clashes:
            concept, kinds = clashes[0]
            raise OpenMedError(
                f"dictionary ID {concept} is listed with types {kinds} ({len(clashes)} such IDs); "
                "an ID must have one type: fix the type column of your dictionary file"
            )
        self.size = len(totals)
        self.version = _content_hash(totals)
        self.maps: dict[str, dict[tuple[str, str], str]] = {}
        for tier, form in _FORMS.items():
            votes: dict[tuple[str, str], Counter[str]] = {}
            for (kind, text, concept), count in totals.items():
                votes.setdefault((kind, form(text)), Counter())[concept] += count
            # most frequent ID, ties to the smallest
            self.maps[tier] = {
                key: min(counter.items(), key=lambda item: (-item[1], item[0]))[0]
                for key, counter in votes.items()
                if key[1]
            }
        self.indexes: dict[str, TfidfIndex] = {}
        by_type: dict[str, list[tuple[str, str]]] = {}
        for (kind, form), concept in sorted(self.maps["punct"].items()):
            by_type.setdefault(kind, []).append((form, concept))
        for kind, pairs in by_type.items():
            forms, ids = zip(*pairs, strict=True)
            self.indexes[kind] = TfidfIndex(forms, ids, ngram)

    def _string_match(self, text: str, kind: str) -> tuple[str, str] | None:
        for tier in STRING_TIERS:
            if tier in self.tiers:
                concept = self.maps[tier].get((kind, _FORMS[tier](text)))
                if concept is not None:
                    return concept, tier
        return None

    def link_many(self, queries: Sequence[tuple[str, str, str | None]]) -> list[Link]:
        """Link (text, type, long form or None) queries; one TF-IDF pass for the batch."""
        links: dict[tuple[str, str, str | None], Link] = {}
        pending: dict[str, list[tuple[str, str, str | None]]] = {}
        for query in dict.fromkeys(queries):
            text, kind, long_form = query
            match = None
            # The document's own definition outranks what the corpora mostly mean by a short
            # form: "CYA" after "cyclophosphamide (CYA)" is not cyclosporine.
            if long_form and "abbreviation" in self.tiers:
                found = self._string_match(long_form, kind)
                match = (found[0], "abbreviation") if found else None
            if match is None:
                match = self._string_match(text, kind)
            if match is not None:
                links[query] = Link(match[0], match[1], 1.0)
            elif "tfidf" in self.tiers and kind in self.indexes:
                pending.setdefault(kind, []).append(query)
            else:
                links[query] = Link(local_id(kind, long_form or text), "local", 0.0)
        for kind, group in pending.items():
            index = self.indexes[kind]
            nearest = index.nearest([punct_form(long or text) for text, _, long in group])
            for query, (position, score) in zip(group, nearest, strict=True):
                if position >= 0 and score >= self.threshold:
                    links[query] = Link(index.ids[position], "tfidf", score)
                else:
                    links[query] = Link(local_id(kind, query[2] or query[0]), "local", 0.0)
        return [links[query] for query in queries]

    def link(self, text: str, kind: str, long_form: str | None = None) -> Link:
        return self.link_many([(text, kind, long_form)])[0]


def _content_hash(totals: Mapping[tuple[str, str, str], int]) -> str:
    digest = hashlib.sha256()
    for (kind, text, concept), count in sorted(totals.items()):
        digest.update(f"{kind}\t{text}\t{concept}\t{count}\n".encode())
    return digest.hexdigest()[:16]


def build_linker(config: LinkerConfig) -> Linker:
    """The linker a config describes: built-in and user dictionaries, threshold, tiers."""
    label_map = config.label_map
    entries = (
        builtin_entries(config.data_root, label_map, config.builtin_splits)
        if config.builtin
        else []
    )
    for uri in config.dictionaries:
        entries += read_dictionary_tsv(uri, label_map)
    if not entries:
        raise OpenMedError(
            "the linking dictionary is empty: enable the built-in dictionary or pass a "
            "--dictionary file"
        )
    return Linker(entries, threshold=config.threshold, ngram=config.ngram, tiers=config.tiers)
