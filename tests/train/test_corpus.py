"""DAPT corpus preparation: licence and leakage filters, held-out split, counts, bad input."""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
import pytest

from openmed_ray.config import CorpusConfig
from openmed_ray.errors import DataFormatError, OpenMedError
from openmed_ray.io.passages import CorpusError
from openmed_ray.train.corpus import benchmark_eval_pmids, build_corpus, in_heldout
from tests.conftest import synthetic_sentence


def text(rng: random.Random, sentences: int = 30) -> str:
    return " ".join(" ".join(synthetic_sentence(rng)[0]) + " ." for _ in range(sentences))


def pubtator(pmids: list[str]) -> str:
    return "".join(f"{p}|t|Title {p}\n{p}|a|Abstract of {p}.\n\n" for p in pmids)


@pytest.fixture
def data_root(tmp_path):
    """Benchmark dev/test PMIDs: BC5CDR dev has 1001, NCBI-disease test 1002, s800 test 1003."""
    root = tmp_path / "data"
    (root / "normalization" / "BC5CDR").mkdir(parents=True)
    (root / "normalization" / "NCBI-disease").mkdir(parents=True)
    (root / "bioner" / "s800" / "source").mkdir(parents=True)
    (root / "normalization/BC5CDR/CDR_DevelopmentSet.PubTator.txt").write_text(pubtator(["1001"]))
    (root / "normalization/BC5CDR/CDR_TestSet.PubTator.txt").write_text(pubtator(["2000"]))
    (root / "normalization/BC5CDR/CDR_TrainingSet.PubTator.txt").write_text(pubtator(["1004"]))
    (root / "normalization/NCBI-disease/NCBItestset_corpus.txt").write_text(pubtator(["1002"]))
    (root / "bioner/s800/source/split-test.txt").write_text("1003\n")
    return root


def write_corpus(directory, records) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "docs.jsonl", "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def config(tmp_path, source, backbone, data_root, **overrides) -> CorpusConfig:
    values = dict(
        source=str(source),
        output=str(tmp_path / "out" / "corpus.parquet"),
        backbone=str(backbone),
        data_root=str(data_root),
        heldout_fraction=0.25,
    )
    values.update(overrides)
    return CorpusConfig(**values)


def test_eval_pmids_come_from_dev_and_test_files_only(data_root):
    found = benchmark_eval_pmids(data_root)
    assert found == {"BC5CDR devel": {"1001"}, "BC5CDR test": {"2000"},
                     "NCBI-disease test": {"1002"}, "s800 test": {"1003"}}  # fmt: skip


def test_leakage_and_licence_filters_held_out_split_and_counts(tmp_path, tiny_backbone, data_root):
    rng = random.Random(0)
    records = [
        {"id": f"PMC{i}", "pmid": str(1000 + i), "license": lic, "text": text(rng)}
        for i, lic in enumerate(["CC-BY", "CC0", "CC-BY", "CC0", "CC-BY", "CC-BY-NC"])
    ]
    records += [
        {"id": f"PMC{100 + i}", "pmid": str(5000 + i), "license": "CC0", "text": text(rng)}
        for i in range(40)
    ]
    records.append({"id": "PMC0", "pmid": "1000", "license": "CC-BY", "text": "Short."})
    records.append({"id": "empty", "text": " "})
    records.append({"id": "note", "text": text(rng)})  # no licence field
    write_corpus(tmp_path / "src", records)
    stats = build_corpus(
        config(
            tmp_path, tmp_path / "src", tiny_backbone, data_root, license_filter=("cc0", "cc-by")
        )
    )
    documents = stats["documents"]
    assert documents["read"] == 49 and documents["empty_text"] == 1
    assert documents["duplicates_merged"] == 1  # PMC0 twice: the longer text is kept
    assert documents["dropped_license_by_value"] == {"(none)": 1, "CC-BY-NC": 1}
    # PMIDs 1001 (BC5CDR dev), 1002 (NCBI test) and 1003 (s800 test) leak; 1004 is BC5CDR train.
    assert documents["dropped_leakage"] == 3
    assert stats["leakage"]["matched"] == {
        "BC5CDR devel": ["1001"],
        "NCBI-disease test": ["1002"],
        "s800 test": ["1003"],
    }
    assert "carry no PMIDs" in stats["leakage"]["unchecked"]
    assert documents["kept"] == 42 == documents["train"] + documents["heldout"]

    train = pq.read_table(stats["output"]).to_pydict()
    heldout = pq.read_table(stats["heldout"]).to_pydict()
    kept_ids = {"PMC0", "PMC4"} | {f"PMC{100 + i}" for i in range(40)}
    assert set(train["doc_id"]) | set(heldout["doc_id"]) == kept_ids
    assert not set(train["doc_id"]) & set(heldout["doc_id"])  # split by document
    assert {d for d in kept_ids if in_heldout(d, 0.25)} == set(heldout["doc_id"])
    assert 0 < documents["heldout"] < documents["train"]
    assert set(train["license"]) <= {"CC0", "CC-BY"}
    assert all(50 <= n <= 256 for n in train["n_wordpieces"] + heldout["n_wordpieces"])
    assert stats["passages"] == {"train": len(train["text"]), "heldout": len(heldout["text"])}
    assert stats["tokens"]["train"] == sum(train["n_wordpieces"])
    on_disk = json.loads((tmp_path / "out" / "corpus.stats.json").read_text())
    assert on_disk["documents"] == documents

    # --max-docs keeps the first documents that pass the filters, in input order.
    capped = build_corpus(
        config(
            tmp_path,
            tmp_path / "src",
            tiny_backbone,
            data_root,
            max_docs=10,
            output=str(tmp_path / "capped.parquet"),
        )  # fmt: skip
    )
    assert capped["documents"]["kept"] == 10 and capped["documents"]["dropped_max_docs"] == 34
    ids = set(pq.read_table(capped["output"]).column("doc_id").to_pylist())
    ids |= set(pq.read_table(capped["heldout"]).column("doc_id").to_pylist())
    assert ids == {"PMC0", "PMC4", "PMC5"} | {f"PMC{100 + i}" for i in range(7)}


def test_bad_corpora_fail_clearly(tmp_path, tiny_backbone, data_root):
    write_corpus(tmp_path / "notext", [{"id": "a", "body": "no text field"}])
    with pytest.raises(DataFormatError, match=r"docs.jsonl:1: no 'text' field \(fields: \['body'"):
        build_corpus(config(tmp_path, tmp_path / "notext", tiny_backbone, data_root))
    write_corpus(tmp_path / "blank", [{"id": "a", "text": ""}])
    with pytest.raises(CorpusError, match="empty corpus"):
        build_corpus(config(tmp_path, tmp_path / "blank", tiny_backbone, data_root))
    write_corpus(tmp_path / "short", [{"id": "a", "text": "Too short."}])
    with pytest.raises(CorpusError, match="no training passage"):
        build_corpus(config(tmp_path, tmp_path / "short", tiny_backbone, data_root))
    write_corpus(tmp_path / "nc", [{"id": "a", "license": "CC-BY-NC", "text": "Words here."}])
    with pytest.raises(CorpusError, match="every document was filtered out"):
        build_corpus(
            config(tmp_path, tmp_path / "nc", tiny_backbone, data_root, license_filter=("cc0",))
        )
    with pytest.raises(OpenMedError, match="--no-leakage-filter"):
        build_corpus(config(tmp_path, tmp_path / "nc", tiny_backbone, tmp_path / "nowhere"))


def test_corpus_and_dapt_verbs(tmp_path, tiny_backbone, data_root, capsys):
    from openmed_ray.cli import main

    rng = random.Random(1)
    records = [{"id": f"d{i}", "license": "CC0", "text": text(rng)} for i in range(6)]
    write_corpus(tmp_path / "src", records + [{"id": "x", "license": "CC-BY-NC", "text": "x"}])
    output = tmp_path / "cli" / "corpus.parquet"
    arguments = ["--from", str(tmp_path / "src"), "--output", str(output)]
    arguments += ["--backbone", str(tiny_backbone), "--data-root", str(data_root)]
    assert main(["corpus", *arguments, "--license-filter", "cc0, cc-by", "--max-docs", "5"]) == 0
    printed = capsys.readouterr().out
    stats = json.loads((tmp_path / "cli" / "corpus.stats.json").read_text())
    assert stats["license_filter"] == ["cc0", "cc-by"] and stats["max_docs"] == 5
    assert stats["documents"]["dropped_license"] == 1 and stats["documents"]["kept"] == 5
    assert f"{stats['passages']['train']} training passages" in printed
    assert (tmp_path / "cli" / "corpus.heldout.parquet").is_file()

    missing = ["--corpus", str(tmp_path / "none.parquet"), "--output", str(tmp_path / "run")]
    assert main(["dapt", *missing, "--backbone", str(tiny_backbone)]) == 2
    assert "none.parquet does not exist" in capsys.readouterr().err
