import re

import pytest

from openmed_ray.config import resolve_data_root
from openmed_ray.datasets import (
    REGISTRY,
    SPLITS,
    all_datasets,
    count_mentions,
    get_dataset,
    require_dataset,
)
from openmed_ray.errors import DatasetUnavailableError, UnknownDatasetError

DATA_ROOT = resolve_data_root()
needs_shared_data = pytest.mark.skipif(
    not (DATA_ROOT / "README.md").is_file(), reason=f"shared data not found at {DATA_ROOT}"
)


def readme_counts() -> dict[tuple[str, str], tuple[int, int, int]]:
    """(dataset, split) -> (sentences, tokens, mentions) from the data README's count table."""
    pattern = re.compile(
        r"^\| (\S+) \| (train|devel|test) \| `[^`]+` \| [\d,]+ \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|"
    )
    counts = {}
    for line in (DATA_ROOT / "README.md").read_text().splitlines():
        match = pattern.match(line)
        if match:
            name, split, *numbers = match.groups()
            counts[name, split] = tuple(int(n.replace(",", "")) for n in numbers)
    return counts


def test_registry_holds_the_papers_twelve_benchmarks():
    assert len(REGISTRY) == 12
    ncbi = get_dataset("NCBI-disease").info
    assert (ncbi.paper_f1, ncbi.prior_sota, ncbi.prior_leader) == (91.10, 89.71, "BioBERT")
    assert get_dataset("jnlpba").info.delta_pp == -0.10
    assert get_dataset("ncbi").name == "NCBI-disease"


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'nope'.*NCBI-disease"):
        get_dataset("nope")


def test_bc4chemd_is_registered_but_unavailable_with_a_reason():
    dataset = get_dataset("BC4CHEMD")
    assert not dataset.available
    with pytest.raises(DatasetUnavailableError, match="BC4CHEMD.*not in the shared data"):
        dataset.load("train")
    with pytest.raises(DatasetUnavailableError, match="BC4CHEMD"):
        require_dataset("bc4chemd")


def test_missing_files_name_the_data_root_setting(tmp_path):
    dataset = get_dataset("NCBI-disease", tmp_path)
    assert not dataset.available
    with pytest.raises(DatasetUnavailableError, match="OPENMED_RAY_DATA_ROOT"):
        dataset.load("test")


def test_data_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENMED_RAY_DATA_ROOT", str(tmp_path))
    assert get_dataset("CLL").data_root == tmp_path.resolve()


def test_count_mentions_follows_seqeval_chunking():
    assert count_mentions(["B-X", "I-X", "O", "I-X", "I-Y", "B-Y"]) == 4


@needs_shared_data
def test_counts_equal_the_data_readme():
    expected = readme_counts()
    assert len(expected) == 30  # 10 datasets x 3 splits
    for dataset in all_datasets():
        if not dataset.available:
            continue
        for split in SPLITS:
            stats = dataset.stats(split)
            assert (stats.sentences, stats.tokens, stats.mentions) == expected[
                dataset.name, split
            ], (dataset.name, split)


@needs_shared_data
def test_entity_types_match_the_files():
    for dataset in all_datasets():
        if dataset.available:
            seen = {
                tag[2:]
                for split in SPLITS
                for s in dataset.load(split)
                for tag in s.tags
                if tag != "O"
            }
            assert seen == set(dataset.info.entity_types), dataset.name
