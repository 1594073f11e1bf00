"""Raw JSONL(.gz) corpora to DAPT passages: licence filter, benchmark-leakage filter, a
held-out split by document, and sentence-aligned passages of 50-256 wordpieces.

Records need a `text` field; `id` (else `pmcid`, else `pmid`), `pmid` and `license` are used
when present. A document found in several files (PMC-OA's abstracts and full texts share
ids) is kept once, with its longest text. Documents whose PMID is in a benchmark's dev or
test set are dropped so DAPT never sees evaluation text; the PMIDs come from the PubTator
files (BC5CDR, NCBI-disease) and the s800 split lists. The IOB2 TSVs carry no PMIDs, so the
other benchmarks' documents cannot be matched (recorded in the stats).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from openmed_ray.config import CorpusConfig, resolve_data_root
from openmed_ray.errors import DataFormatError, OpenMedError
from openmed_ray.io.filesystem import write_bytes_atomic, write_parquet_atomic
from openmed_ray.io.jsonl import iter_jsonl, jsonl_files
from openmed_ray.io.passages import PASSAGE_SCHEMA, CorpusError, heldout_path, stats_path
from openmed_ray.io.pubtator import read_pubtator
from openmed_ray.models.backbones import load_tokenizer, resolve_backbone
from openmed_ray.text.passages import split_passages

log = logging.getLogger(__name__)

# (benchmark, split, file under the data root, format) of every dev/test set with PMIDs.
EVAL_PMID_SOURCES = (
    ("BC5CDR", "devel", "normalization/BC5CDR/CDR_DevelopmentSet.PubTator.txt", "pubtator"),
    ("BC5CDR", "test", "normalization/BC5CDR/CDR_TestSet.PubTator.txt", "pubtator"),
    ("NCBI-disease", "devel", "normalization/NCBI-disease/NCBIdevelopset_corpus.txt", "pubtator"),
    ("NCBI-disease", "test", "normalization/NCBI-disease/NCBItestset_corpus.txt", "pubtator"),
    ("s800", "devel", "bioner/s800/source/split-devel.txt", "pmid-list"),
    ("s800", "test", "bioner/s800/source/split-test.txt", "pmid-list"),
)
UNCHECKED_BENCHMARKS = (
    "BC2GM, JNLPBA, linnaeus, AnatEM, BioNLP13CG and CLL: their IOB2 TSVs carry no PMIDs, so "
    "their dev/test documents cannot be matched against the corpus"
)
TOKENIZE_BATCH = 64  # documents per tokenizer call


@dataclass
class Document:
    doc_id: str
    text: str
    pmid: str | None
    license: str | None
    source: str


def benchmark_eval_pmids(data_root: str | Path | None = None) -> dict[str, set[str]]:
    """PMIDs per `benchmark split` for every dev/test source present under the data root."""
    root = resolve_data_root(data_root)
    found: dict[str, set[str]] = {}
    for benchmark, split, relative, kind in EVAL_PMID_SOURCES:
        path = root / relative
        if not path.is_file():
            log.warning(
                "leakage filter: %s not found; %s %s is not checked", path, benchmark, split
            )
            continue
        if kind == "pubtator":
            pmids = {document.pmid for document in read_pubtator(path)}
        else:
            pmids = {line.strip() for line in path.read_text().splitlines() if line.strip()}
        found[f"{benchmark} {split}"] = pmids
    return found


def _text_of(record: dict[str, Any], path: Path, line: int) -> str | None:
    if "text" not in record:
        raise DataFormatError(
            path, line, f"no 'text' field (fields: {sorted(record)}); every record needs one"
        )
    text = record["text"]
    return text if isinstance(text, str) and text.strip() else None


def _optional(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    return None if value in (None, "") else str(value)


def read_documents(source: str | Path) -> tuple[list[Document], dict[str, int], list[str]]:
    """Documents in order of first appearance, counts (read, empty, duplicates), file names."""
    files = jsonl_files(source)
    documents: dict[str, Document] = {}
    counts = {"read": 0, "empty_text": 0, "duplicates_merged": 0}
    for path in files:
        for line, record in iter_jsonl(path):
            counts["read"] += 1
            text = _text_of(record, path, line)
            if text is None:
                counts["empty_text"] += 1
                continue
            doc_id = (
                _optional(record, "id")
                or _optional(record, "pmcid")
                or _optional(record, "pmid")
                or f"{path.name}:{line}"
            )
            document = Document(
                doc_id, text, _optional(record, "pmid"), _optional(record, "license"), path.name
            )
            previous = documents.get(doc_id)
            if previous is not None:
                counts["duplicates_merged"] += 1
                if len(text) <= len(previous.text):
                    continue
            documents[doc_id] = document
    return list(documents.values()), counts, [p.name for p in files]


def in_heldout(doc_id: str, fraction: float) -> bool:
    """A stable share of documents by a hash of their id (independent of order and filters)."""
    digest = int(hashlib.sha1(doc_id.encode("utf-8")).hexdigest()[:8], 16)
    return digest < fraction * 2**32


def _passage_table(documents: list[Document], tokenizer, config: CorpusConfig, seed: int):
    """The passages of `documents` (shuffled with `seed`) and the short-dropped wordpieces."""
    columns: dict[str, list] = {name: [] for name in PASSAGE_SCHEMA.names}
    dropped = 0
    for begin in range(0, len(documents), TOKENIZE_BATCH):
        part = documents[begin : begin + TOKENIZE_BATCH]
        split = split_passages(
            [d.text for d in part],
            tokenizer,
            min_wordpieces=config.min_wordpieces,
            max_wordpieces=config.max_wordpieces,
        )
        for document, result in zip(part, split, strict=True):
            dropped += result.dropped_wordpieces
            for index, passage in enumerate(result.passages):
                columns["doc_id"].append(document.doc_id)
                columns["passage"].append(index)
                columns["text"].append(document.text[passage.start : passage.end])
                columns["n_wordpieces"].append(passage.n_wordpieces)
                columns["pmid"].append(document.pmid)
                columns["license"].append(document.license)
                columns["source"].append(document.source)
    table = pa.table(columns, schema=PASSAGE_SCHEMA)
    # Passages of one document sit together in the input; shuffling the file once keeps
    # every training batch mixed without a large shuffle buffer.
    order = np.random.default_rng(seed).permutation(table.num_rows)
    return table.take(pa.array(order, type=pa.int64())), dropped


def build_corpus(config: CorpusConfig) -> dict[str, Any]:
    """Filter, split and write the passages; returns (and writes) the counts."""
    started = time.perf_counter()
    tokenizer = load_tokenizer(resolve_backbone(config.backbone))
    eval_pmids: dict[str, set[str]] = {}
    if config.exclude_benchmark_pmids:
        eval_pmids = benchmark_eval_pmids(config.data_root)
        if not eval_pmids:
            raise OpenMedError(
                f"leakage filter: no benchmark dev/test PMID file found under "
                f"{resolve_data_root(config.data_root)}; set --data-root, or pass "
                "--no-leakage-filter to build the corpus without it"
            )
    documents, counts, files = read_documents(config.source)
    if not documents:
        raise CorpusError(f"{config.source}: no document has a non-empty 'text' (empty corpus)")

    allowed = {name.lower() for name in config.license_filter}
    by_license: dict[str, int] = {}
    matched: dict[str, list[str]] = {}
    kept: list[Document] = []
    for document in documents:
        if allowed and (document.license or "").lower() not in allowed:
            key = document.license or "(none)"
            by_license[key] = by_license.get(key, 0) + 1
            continue
        hits = [name for name, pmids in eval_pmids.items() if document.pmid in pmids]
        if hits:
            for name in hits:
                matched.setdefault(name, []).append(document.pmid)
            continue
        kept.append(document)
    dropped_leakage = len(documents) - sum(by_license.values()) - len(kept)
    over_cap = 0
    if config.max_docs is not None and len(kept) > config.max_docs:
        over_cap = len(kept) - config.max_docs
        kept = kept[: config.max_docs]
    if not kept:
        raise CorpusError(
            f"{config.source}: every document was filtered out (licence filter "
            f"{list(config.license_filter)} dropped {sum(by_license.values())}, leakage "
            f"{dropped_leakage}); nothing to train on"
        )

    heldout_docs = [d for d in kept if in_heldout(d.doc_id, config.heldout_fraction)]
    train_docs = [d for d in kept if not in_heldout(d.doc_id, config.heldout_fraction)]
    train, train_short = _passage_table(train_docs, tokenizer, config, config.seed)
    heldout, heldout_short = _passage_table(heldout_docs, tokenizer, config, config.seed + 1)
    if train.num_rows == 0:
        raise CorpusError(
            f"{config.source}: no training passage of {config.min_wordpieces}-"
            f"{config.max_wordpieces} wordpieces (documents too short?)"
        )
    heldout_uri = config.heldout or heldout_path(config.output)
    write_parquet_atomic(train, config.output)
    write_parquet_atomic(heldout, heldout_uri)

    def wordpieces(table: pa.Table) -> int:
        return int(np.sum(table.column("n_wordpieces").to_numpy())) if table.num_rows else 0

    stats = {
        "source": str(config.source),
        "files": files,
        "backbone": config.backbone,
        "output": str(config.output),
        "heldout": str(heldout_uri),
        "license_filter": list(config.license_filter),
        "max_docs": config.max_docs,
        "documents": {
            **counts,
            "distinct": len(documents),
            "dropped_license": sum(by_license.values()),
            "dropped_license_by_value": dict(sorted(by_license.items())),
            "dropped_leakage": dropped_leakage,
            "dropped_max_docs": over_cap,
            "kept": len(kept),
            "train": len(train_docs),
            "heldout": len(heldout_docs),
        },
        "leakage": {
            "pmids_checked": {name: len(pmids) for name, pmids in eval_pmids.items()},
            "matched": {name: sorted(set(pmids)) for name, pmids in matched.items()},
            "unchecked": UNCHECKED_BENCHMARKS,
        },
        "passages": {"train": train.num_rows, "heldout": heldout.num_rows},
        "tokens": {"train": wordpieces(train), "heldout": wordpieces(heldout)},
        "wordpieces_dropped_short": train_short + heldout_short,
        "min_wordpieces": config.min_wordpieces,
        "max_wordpieces": config.max_wordpieces,
        "heldout_fraction": config.heldout_fraction,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_bytes_atomic(json.dumps(stats, indent=2).encode(), stats_path(config.output))
    log.info(
        "corpus: %d documents read, %d dropped by licence, %d by leakage; %d train passages "
        "(%d wordpieces), %d held-out passages; %s",
        counts["read"],
        stats["documents"]["dropped_license"],
        dropped_leakage,
        train.num_rows,
        stats["tokens"]["train"],
        heldout.num_rows,
        UNCHECKED_BENCHMARKS,
    )
    return stats
