"""Relation benchmarks in the shared data: BC5CDR chemical-induced disease (CID)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from openmed_ray.config import resolve_data_root
from openmed_ray.datasets import file_sha256
from openmed_ray.errors import OpenMedError
from openmed_ray.io.pubtator import read_pubtator
from openmed_ray.relations.examples import CID_TASK, RelationDocument, RelationTask, from_pubtator

SPLITS = ("train", "devel", "test")


class UnknownRelationDatasetError(OpenMedError):
    """A relation dataset name that is not registered."""


@dataclass(frozen=True)
class RelationDataset:
    name: str
    task: RelationTask
    files: dict[str, str]  # split -> path under the data root
    data_root: Path

    def path(self, split: str) -> Path:
        if split not in self.files:
            raise OpenMedError(f"{self.name} has no split {split!r}; splits: {list(self.files)}")
        path = self.data_root / self.files[split]
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.name} {split} file not found: {path} (set --data-root or "
                "$OPENMED_RAY_DATA_ROOT to the shared data directory)"
            )
        return path

    def load(self, split: str) -> list[RelationDocument]:
        return from_pubtator(read_pubtator(self.path(split)), self.task)

    def file_sha256(self, split: str) -> str:
        return file_sha256(self.path(split))


_FILES = {
    "BC5CDR-CID": (
        CID_TASK,
        {
            "train": "normalization/BC5CDR/CDR_TrainingSet.PubTator.txt",
            "devel": "normalization/BC5CDR/CDR_DevelopmentSet.PubTator.txt",
            "test": "normalization/BC5CDR/CDR_TestSet.PubTator.txt",
        },
    )
}


def relation_dataset(name: str, data_root: str | Path | None = None) -> RelationDataset:
    if name not in _FILES:
        raise UnknownRelationDatasetError(
            f"unknown relation dataset {name!r}; known: {', '.join(sorted(_FILES))}"
        )
    task, files = _FILES[name]
    return RelationDataset(name, task, files, resolve_data_root(data_root))
