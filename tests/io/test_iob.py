import gzip

import pytest

from openmed_ray.errors import DataFormatError
from openmed_ray.io.iob import parse_tag, read_iob2, write_iob2


def write(tmp_path, text, name="data.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_sentences_and_keeps_boundaries(tmp_path):
    path = write(tmp_path, "Famotidine\tB-Chemical\ncauses\tO\n\ndelirium\tB-Disease\n.\tO\n\n")
    sentences = read_iob2(path)
    assert [s.tokens for s in sentences] == [("Famotidine", "causes"), ("delirium", ".")]
    assert [s.tags for s in sentences] == [("B-Chemical", "O"), ("B-Disease", "O")]
    assert [s.line for s in sentences] == [1, 4]


def test_skips_docstart_and_counts_documents(tmp_path):
    text = "-DOCSTART-\tO\n\nIL-2\tB-protein\n\nx\tO\n\n-DOCSTART-\tO\n\ny\tO\n\n"
    sentences = read_iob2(write(tmp_path, text))
    assert [s.tokens for s in sentences] == [("IL-2",), ("x",), ("y",)]
    assert [s.document for s in sentences] == [0, 0, 1]


def test_last_sentence_without_trailing_blank_line(tmp_path):
    assert len(read_iob2(write(tmp_path, "a\tO\n\nb\tO"))) == 2


def test_gzip_input(tmp_path):
    path = tmp_path / "train.tsv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("a\tB-X\nb\tI-X\n\n")
    assert read_iob2(path)[0].tags == ("B-X", "I-X")


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a\tO\nb\tO\textra\n\n", 2, "expected 2 TAB-separated columns"),
        ("a\tO\nb O\n\n", 2, "found 1"),
        ("a\tO\n\nb\tX-Disease\n", 3, "bad tag 'X-Disease'"),
        ("a\tB-\n", 1, "bad tag 'B-'"),
        ("a\tb-Disease\n", 1, "bad tag"),
        ("\tO\n", 1, "empty or space-padded token"),
        ("a\tO\n-DOCSTART-\tO\n", 2, "-DOCSTART- inside a sentence"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, text, line, fragment):
    path = write(tmp_path, text)
    with pytest.raises(DataFormatError) as info:
        read_iob2(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert fragment in str(info.value)


def test_invalid_utf8_is_reported_with_the_file(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"caf\xe9\tO\n\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8") as info:
        read_iob2(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="IOB2 file not found"):
        read_iob2(tmp_path / "nope.tsv")


def test_parse_tag():
    assert parse_tag("O") == ("O", None)
    assert parse_tag("B-Gene_or_gene_product") == ("B", "Gene_or_gene_product")
    assert parse_tag("I-cell-line") == ("I", "cell-line")
    with pytest.raises(ValueError):
        parse_tag("I")


def test_write_then_read_round_trip(tmp_path):
    sentences = [(["a", "b"], ["B-X", "I-X"]), (["c"], ["O"])]
    path = tmp_path / "out" / "pred.tsv"
    write_iob2(path, sentences)
    assert [(list(s.tokens), list(s.tags)) for s in read_iob2(path)] == sentences
    with pytest.raises(ValueError, match="sentence 0"):
        write_iob2(path, [(["a"], [])])
