import pytest

from openmed_ray.errors import DataFormatError
from openmed_ray.io.pubtator import read_pubtator

SAMPLE = (
    "100|t|Famotidine-associated delirium.\n"
    "100|a|Famotidine causes delirium and renal failure.\n"
    "100\t0\t10\tFamotidine\tChemical\tD015738\n"
    "100\t22\t30\tdelirium\tDisease\tD003693\n"
    "100\t63\t76\trenal failure\tDisease\tD051437|D058186\tkidney|failure\n"
    "100\tCID\tD015738\tD003693\n"
    "\n"
    "200|t|No concept here.\n"
    "200|a|Plain text\n"
    "200\t0\t2\tNo\tDisease\t-1\n"
    "\n"
)


def test_documents_mentions_and_relations(tmp_path):
    path = tmp_path / "cdr.txt"
    path.write_text(SAMPLE)
    first, second = read_pubtator(path)
    assert first.pmid == "100"
    assert (
        first.text
        == "Famotidine-associated delirium. Famotidine causes delirium and renal failure."
    )
    assert [(m.start, m.end, m.type) for m in first.mentions] == [
        (0, 10, "Chemical"),
        (22, 30, "Disease"),
        (63, 76, "Disease"),
    ]
    for mention in first.mentions:
        assert first.text[mention.start : mention.end] == mention.text
    assert first.mentions[2].ids == ("D051437", "D058186")
    assert first.mentions[2].individual_mentions == ("kidney", "failure")
    assert [(r.type, r.source_id, r.target_id) for r in first.relations] == [
        ("CID", "D015738", "D003693")
    ]
    assert second.mentions[0].ids == ()
    assert first.problems == [] and second.problems == []


def test_offset_mismatch_is_recorded_or_raised(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("1|t|Cancer.\n1|a|Text\n1\t0\t3\tCancer\tDisease\tD1\n")
    (document,) = read_pubtator(path)
    assert len(document.mentions) == 1
    assert "bad.txt:3" in document.problems[0]
    with pytest.raises(DataFormatError, match=r"bad.txt:3: mention 'Cancer'"):
        read_pubtator(path, strict=True)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("1|t|T\n1|a|A\n1\tx\t3\tT A\tDisease\tD1\n", 3, "offsets must be integers"),
        ("1|t|T\n1|a|A\n1\t0\n", 3, "found 2 columns"),
        ("1|t|T\n2|a|A\n", 2, "PMID 2 outside its document"),
        ("1|t|T\n1|a|A\n1\t3\t3\tx\tDisease\tD1\n", 3, "bad mention offsets"),
    ],
)
def test_malformed_lines(tmp_path, text, line, fragment):
    path = tmp_path / "x.txt"
    path.write_text(text)
    with pytest.raises(DataFormatError) as info:
        read_pubtator(path)
    assert info.value.line == line
    assert fragment in str(info.value)
