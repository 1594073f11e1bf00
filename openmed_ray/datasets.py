"""Registry of the OpenMed NER paper's 12 benchmarks (table 4) and their files under the data root.

Names are matched case-insensitively, and common aliases work (`ncbi`, `bc5cdr-chemical`).
A dataset that is registered but absent here (BC4CHEMD, FSU) raises DatasetUnavailableError
with the reason, never a bare FileNotFoundError.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from openmed_ray.config import resolve_data_root
from openmed_ray.errors import DatasetUnavailableError, UnknownDatasetError
from openmed_ray.io.iob import Sentence, iter_iob2
from openmed_ray.text.spans import bio_to_spans

SPLITS = ("train", "devel", "test")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    directory: str | None  # under <data root>/bioner
    entity_types: tuple[str, ...]
    paper_f1: float  # OpenMed's test micro-F1 (%), table 4
    prior_sota: float | None  # best earlier result (%), table 4
    prior_leader: str
    domain: str
    aliases: tuple[str, ...] = ()
    missing_reason: str | None = None  # set when the data cannot exist here at all

    @property
    def delta_pp(self) -> float | None:
        return None if self.prior_sota is None else round(self.paper_f1 - self.prior_sota, 2)


_BIONLP13CG_TYPES = (
    "Amino_acid",
    "Anatomical_system",
    "Cancer",
    "Cell",
    "Cellular_component",
    "Developing_anatomical_structure",
    "Gene_or_gene_product",
    "Immaterial_anatomical_entity",
    "Multi-tissue_structure",
    "Organ",
    "Organism",
    "Organism_subdivision",
    "Organism_substance",
    "Pathological_formation",
    "Simple_chemical",
    "Tissue",
)

REGISTRY: tuple[DatasetInfo, ...] = (
    DatasetInfo(
        "BC4CHEMD",
        None,
        ("Chemical",),
        95.40,
        94.03,
        "DBGN",
        "chemical",
        aliases=("chemdner",),
        missing_reason=(
            "BC4CHEMD (CHEMDNER) is not in the shared data: its files exceed the 4 MiB snapshot "
            "limit and no other copy was found (see the data README, section 2). Use "
            "BC5CDR-chem for chemical NER."
        ),
    ),
    DatasetInfo(
        "BC5CDR-chem",
        "BC5CDR-chem",
        ("Chemical",),
        96.10,
        94.22,
        "SciFive",
        "chemical",
        aliases=("bc5cdr-chemical", "bc5cdr_chem"),
    ),
    DatasetInfo(
        "BC5CDR-disease",
        "BC5CDR-disease",
        ("Disease",),
        91.20,
        88.50,
        "BioMegatron",
        "disease",
        aliases=("bc5cdr_disease",),
    ),
    DatasetInfo(
        "NCBI-disease",
        "NCBI-disease",
        ("Disease",),
        91.10,
        89.71,
        "BioBERT",
        "disease",
        aliases=("ncbi", "ncbi_disease"),
    ),
    DatasetInfo(
        "JNLPBA",
        "JNLPBA",
        ("DNA", "RNA", "cell_line", "cell_type", "protein"),
        81.90,
        82.00,
        "KeBioLM",
        "gene/protein",
    ),
    DatasetInfo(
        "linnaeus",
        "linnaeus",
        ("Species",),
        96.50,
        92.70,
        "BERN2",
        "species",
    ),
    DatasetInfo(
        "s800",
        "s800",
        ("Species",),
        86.40,
        85.48,
        "BioNerFlair",
        "species",
        aliases=("species-800", "species800"),
    ),
    DatasetInfo(
        "BC2GM",
        "BC2GM",
        ("GENE",),
        90.10,
        84.71,
        "PubMedBERT",
        "gene/protein",
        aliases=("bc2", "bc2gm-gene"),
    ),
    DatasetInfo(
        "AnatEM",
        "AnatEM",
        ("Anatomy",),
        90.60,
        91.65,
        "Spark NLP (BERT)",
        "anatomy",
    ),
    DatasetInfo(
        "BioNLP13CG",
        "BioNLP13CG",
        _BIONLP13CG_TYPES,
        89.90,
        87.83,
        "Spark NLP (BERT)",
        "cancer genetics",
        aliases=("bionlp2013cg", "bionlp-2013-cg"),
    ),
    DatasetInfo(
        "CLL",
        "CLL",
        ("CL",),
        95.70,
        85.98,
        "Ka-NER",
        "cell line",
        aliases=("cell-line",),
    ),
    DatasetInfo(
        "FSU",
        None,
        (),
        96.10,
        None,
        "n/a",
        "protein/gene",
        missing_reason="FSU is a private corpus; the paper's authors did not release it.",
    ),
)


@dataclass(frozen=True)
class SplitStats:
    sentences: int
    tokens: int
    mentions: int

    def to_dict(self) -> dict[str, int]:
        return {"sentences": self.sentences, "tokens": self.tokens, "mentions": self.mentions}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (cards record the data they were trained and tested on)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def count_mentions(tags: tuple[str, ...] | list[str]) -> int:
    """Mentions as seqeval counts them: B- tags plus any I- that follows O or another type."""
    return len(bio_to_spans(tags))


@dataclass(frozen=True)
class Dataset:
    """A registered dataset bound to a data root."""

    info: DatasetInfo
    data_root: Path
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def directory(self) -> Path | None:
        if self.info.directory is None:
            return None
        return self.data_root / "bioner" / self.info.directory

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None

    @cached_property
    def unavailable_reason(self) -> str | None:
        if self.info.missing_reason:
            return self.info.missing_reason
        missing = [s for s in SPLITS if not self._split_file(s).is_file()]
        if missing:
            return (
                f"{self.name}: split file(s) {missing} not found under {self.directory}; set "
                f"$OPENMED_RAY_DATA_ROOT to the directory holding bioner/ (default ../shared/data)"
            )
        return None

    def _split_file(self, split: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{split}.tsv"

    def path(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if self.unavailable_reason:
            raise DatasetUnavailableError(self.unavailable_reason)
        return self._split_file(split)

    def load(self, split: str) -> list[Sentence]:
        """All sentences of a split (cached per Dataset object)."""
        if split not in self._cache:
            self._cache[split] = list(iter_iob2(self.path(split)))
        return self._cache[split]

    def stats(self, split: str) -> SplitStats:
        sentences = self.load(split)
        return SplitStats(
            sentences=len(sentences),
            tokens=sum(len(s) for s in sentences),
            mentions=sum(count_mentions(s.tags) for s in sentences),
        )

    def file_sha256(self, split: str) -> str:
        return file_sha256(self.path(split))

    def to_dict(self, with_stats: bool = True) -> dict:
        item = {
            "name": self.name,
            "available": self.available,
            "entity_types": list(self.info.entity_types),
            "domain": self.info.domain,
            "paper_f1": self.info.paper_f1,
            "prior_sota": self.info.prior_sota,
            "prior_leader": self.info.prior_leader,
            "directory": str(self.directory) if self.directory else None,
            "splits": {},
        }
        if not self.available:
            item["unavailable_reason"] = self.unavailable_reason
        elif with_stats:
            item["splits"] = {split: self.stats(split).to_dict() for split in SPLITS}
        return item


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(" ", "-")


_BY_NAME = {_normalize(alias): info for info in REGISTRY for alias in (info.name, *info.aliases)}


def dataset_info(name: str) -> DatasetInfo:
    """Look a dataset up by name or alias, case-insensitively."""
    try:
        return _BY_NAME[_normalize(name)]
    except KeyError:
        known = ", ".join(info.name for info in REGISTRY)
        raise UnknownDatasetError(f"unknown dataset {name!r}; known datasets: {known}") from None


def get_dataset(name: str, data_root: str | Path | None = None) -> Dataset:
    """A dataset bound to the data root; loading raises DatasetUnavailableError if absent."""
    return Dataset(dataset_info(name), resolve_data_root(data_root))


def require_dataset(name: str, data_root: str | Path | None = None) -> Dataset:
    """Like get_dataset, but fails now when the dataset's files are not here."""
    dataset = get_dataset(name, data_root)
    if not dataset.available:
        raise DatasetUnavailableError(dataset.unavailable_reason)
    return dataset


def all_datasets(data_root: str | Path | None = None) -> list[Dataset]:
    root = resolve_data_root(data_root)
    return [Dataset(info, root) for info in REGISTRY]


def format_datasets_table(items: list[dict]) -> str:
    """A human-readable table of `Dataset.to_dict()` items."""
    header = f"{'dataset':<15} {'avail':<5} {'paper F1':>8} {'SOTA':>6}  "
    header += "  ".join(f"{s + ' sent/tok/ment':>24}" for s in SPLITS) + "  types"
    rows = [header, "-" * len(header)]
    for item in items:
        sota = f"{item['prior_sota']:.2f}" if item["prior_sota"] is not None else "n/a"
        cells = []
        for split in SPLITS:
            stats = item["splits"].get(split)
            cells.append(
                f"{stats['sentences']:>6}/{stats['tokens']:>7}/{stats['mentions']:>6}"
                if stats
                else f"{'-':>22}"
            )
        types = ", ".join(item["entity_types"])
        if len(types) > 40:
            types = f"{len(item['entity_types'])} types"
        rows.append(
            f"{item['name']:<15} {'yes' if item['available'] else 'no':<5} "
            f"{item['paper_f1']:>8.2f} {sota:>6}  "
            + "  ".join(f"{c:>24}" for c in cells)
            + f"  {types}"
        )
    return "\n".join(rows)
