import pyarrow.parquet as pq

from openmed_ray.datasets import get_dataset
from openmed_ray.io.filesystem import write_parquet_atomic
from openmed_ray.io.parquet import export_dataset, pubtator_to_tables, sentences_to_table
from openmed_ray.io.pubtator import read_pubtator
from tests.io.test_pubtator import SAMPLE


def make_root(tmp_path):
    directory = tmp_path / "bioner" / "NCBI-disease"
    directory.mkdir(parents=True)
    for split, text in {
        "train": "a\tB-Disease\nb\tI-Disease\n\nc\tO\n\n",
        "devel": "d\tO\n\n",
        "test": "e\tB-Disease\n\n",
    }.items():
        (directory / f"{split}.tsv").write_text(text)
    return tmp_path


def test_export_dataset_round_trips(tmp_path):
    dataset = get_dataset("ncbi-disease", make_root(tmp_path))
    written = export_dataset(dataset, tmp_path / "out")
    assert len(written) == 3
    table = pq.read_table(tmp_path / "out" / "NCBI-disease" / "train.parquet")
    assert table.column("tokens").to_pylist() == [["a", "b"], ["c"]]
    assert table.column("tags").to_pylist() == [["B-Disease", "I-Disease"], ["O"]]
    assert table.column("split").to_pylist() == ["train", "train"]


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    table = sentences_to_table([], "x", "train")
    write_parquet_atomic(table, tmp_path / "deep" / "file.parquet")
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["file.parquet"]


def test_pubtator_tables(tmp_path):
    path = tmp_path / "cdr.txt"
    path.write_text(SAMPLE)
    tables = pubtator_to_tables(read_pubtator(path))
    assert tables["documents"].num_rows == 2
    assert tables["mentions"].num_rows == 4
    assert tables["relations"].column("source_id").to_pylist() == ["D015738"]
