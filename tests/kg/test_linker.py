"""The dictionary linker's tiers, ambiguity, versions and dictionary files."""

import pytest

from openmed_ray.config import DEFAULT_LABEL_TYPES, LinkerConfig, resolve_data_root
from openmed_ray.errors import ConfigError, DataFormatError, OpenMedError
from openmed_ray.kg.linker import (
    BUILTIN_SOURCES,
    USER_ENTRY_COUNT,
    Entry,
    Link,
    Linker,
    build_linker,
    read_dictionary_tsv,
)

ENTRIES = [
    Entry("aspirin", "MESH:D001241", "Chemical"),
    Entry("puromycin aminonucleoside", "MESH:D011692", "Chemical"),
    Entry("Gastric bleeding", "MESH:D006471", "Disease"),
    Entry("gastrointestinal hemorrhage", "MESH:D006471", "Disease"),
    Entry("nephrosis", "MESH:D009401", "Disease"),
]


@pytest.fixture(scope="module")
def linker():
    return Linker(ENTRIES, threshold=0.6)


@pytest.mark.parametrize(
    "text, kind, long_form, expected",
    [
        ("aspirin", "Chemical", None, Link("MESH:D001241", "exact", 1.0)),
        ("ASPIRIN", "Chemical", None, Link("MESH:D001241", "case", 1.0)),
        ("Gastric  Bleeding", "Disease", None, Link("MESH:D006471", "case", 1.0)),
        ("gastric-bleeding", "Disease", None, Link("MESH:D006471", "punct", 1.0)),
        ("PAN", "Chemical", "puromycin aminonucleoside", Link("MESH:D011692", "abbreviation", 1.0)),
        ("PAN", "Chemical", "Puromycin-Aminonucleoside", Link("MESH:D011692", "abbreviation", 1.0)),
        # a type only sees its own entries
        ("aspirin", "Disease", None, Link("Disease:aspirin", "local", 0.0)),
        ("unknownium", "Chemical", None, Link("Chemical:unknownium", "local", 0.0)),
        # an undefined short form stays local under its own text; a defined one under its long form
        ("GB", "Disease", None, Link("Disease:gb", "local", 0.0)),
        ("ZQX", "Chemical", "zorbic quixate", Link("Chemical:zorbic quixate", "local", 0.0)),
    ],
)  # fmt: skip
def test_string_and_abbreviation_tiers(linker, text, kind, long_form, expected):
    assert linker.link(text, kind, long_form) == expected


def test_a_short_form_defined_in_the_document_links_through_its_long_form_first():
    linker = Linker(
        [
            *ENTRIES,
            Entry("CYA", "MESH:D016572", "Chemical", count=5),  # cyclosporine, mostly
            Entry("cyclophosphamide", "MESH:D003520", "Chemical"),
        ]
    )
    assert linker.link("CYA", "Chemical") == Link("MESH:D016572", "exact", 1.0)
    assert linker.link("CYA", "Chemical", "cyclophosphamide") == Link(
        "MESH:D003520", "abbreviation", 1.0
    )
    # a long form the dictionary lacks leaves the short form's own match
    assert linker.link("CYA", "Chemical", "zorbic quixate") == Link("MESH:D016572", "exact", 1.0)


def test_tfidf_tier_links_near_misses_above_the_threshold(linker):
    link = linker.link("gastric bleedings", "Disease")
    assert link.id == "MESH:D006471" and link.tier == "tfidf" and 0.6 <= link.score < 1.0
    assert linker.link("nephroses", "Disease")[:2] == ("MESH:D009401", "tfidf")
    # the long form of a defined abbreviation is what TF-IDF compares
    assert linker.link("GIH", "Disease", "gastrointestinal haemorrhage")[:2] == (
        "MESH:D006471",
        "tfidf",
    )
    # below the threshold: local
    assert linker.link("bleach", "Disease").tier == "local"
    strict = Linker(ENTRIES, threshold=0.99)
    assert strict.link("gastric bleedings", "Disease").tier == "local"


def test_disabled_tiers_fall_through(linker):
    exact_only = Linker(ENTRIES, tiers=("exact",))
    assert exact_only.link("ASPIRIN", "Chemical") == Link("Chemical:aspirin", "local", 0.0)
    assert exact_only.link("PAN", "Chemical", "puromycin aminonucleoside").tier == "local"
    assert linker.link("ASPIRIN", "Chemical").tier == "case"


def test_link_many_keeps_query_order_and_duplicates(linker):
    queries = [("aspirin", "Chemical", None), ("nephroses", "Disease", None)] * 2
    links = linker.link_many(queries)
    assert [link.id for link in links] == ["MESH:D001241", "MESH:D009401"] * 2


def test_ambiguous_strings_take_the_most_frequent_id_and_user_entries_win():
    entries = [
        Entry("cold", "MESH:D003139", "Disease", 3),
        Entry("cold", "MESH:D003141", "Disease", 1),
        Entry("tie", "MESH:D2", "Disease", 1),
        Entry("tie", "MESH:D1", "Disease", 1),
    ]
    assert Linker(entries).link("cold", "Disease").id == "MESH:D003139"
    assert Linker(entries).link("tie", "Disease").id == "MESH:D1"
    user = Entry("cold", "MESH:D003141", "Disease", USER_ENTRY_COUNT)
    assert Linker([*entries, user]).link("cold", "Disease").id == "MESH:D003141"


def test_version_is_a_content_hash():
    assert Linker(ENTRIES).version == Linker(list(reversed(ENTRIES))).version
    assert Linker(ENTRIES).version != Linker([*ENTRIES, Entry("x", "MESH:D1", "Chemical")]).version


def test_an_id_with_two_types_is_refused():
    with pytest.raises(OpenMedError, match="MESH:D001241.*types"):
        Linker([*ENTRIES, Entry("aspirin poisoning", "MESH:D001241", "Disease")])


def test_user_dictionary_file(tmp_path):
    path = tmp_path / "mine.tsv"
    path.write_text("# my terms\nASA\tD001241\tChemical\n\nhead ache\tD006261\tDisease\n")
    entries = read_dictionary_tsv(str(path), DEFAULT_LABEL_TYPES)
    assert [(e.text, e.id, e.type) for e in entries] == [
        ("ASA", "MESH:D001241", "Chemical"),
        ("head ache", "MESH:D006261", "Disease"),
    ]
    linker = build_linker(LinkerConfig(builtin=False, dictionaries=(str(path),)))
    assert linker.link("asa", "Chemical") == Link("MESH:D001241", "case", 1.0)


@pytest.mark.parametrize(
    "line", ["aspirin\tD001241", "aspirin\tD001241\tChemical\textra", "aspirin\t\tChemical"]
)
def test_a_bad_dictionary_line_names_file_and_line(tmp_path, line):
    path = tmp_path / "bad.tsv"
    path.write_text(f"ASA\tD001241\tChemical\n# comment\n{line}\n")
    with pytest.raises(DataFormatError, match=rf"{path}:3: expected 3 non-empty"):
        read_dictionary_tsv(str(path), DEFAULT_LABEL_TYPES)


def test_builtin_dictionary_uses_train_and_dev_files_only():
    names = {
        split: {s.rsplit("/", 1)[1] for s in sources} for split, sources in BUILTIN_SOURCES.items()
    }
    assert names == {
        "train": {"CDR_TrainingSet.PubTator.txt", "NCBItrainset_corpus.txt"},
        "dev": {"CDR_DevelopmentSet.PubTator.txt", "NCBIdevelopset_corpus.txt"},
    }
    with pytest.raises(ConfigError, match="linker.builtin_splits: .*unknown \\['test'\\]"):
        LinkerConfig(builtin_splits=("train", "test"))


def test_builtin_dictionary_from_the_data_root():
    if not (resolve_data_root() / BUILTIN_SOURCES["train"][0]).is_file():
        pytest.skip("shared data not available")
    linker = build_linker(LinkerConfig())
    assert linker.link("Naloxone", "Chemical") == Link("MESH:D009270", "exact", 1.0)
    # an NCBI-disease label maps to Disease, OMIM IDs keep their prefix
    assert linker.link("adenomatous polyposis coli", "Disease").id == "MESH:D011125"
    assert any(concept.startswith("OMIM:") for concept in linker.maps["exact"].values())


def test_a_train_only_dictionary_links_dev_strings_as_unseen():
    if not (resolve_data_root() / BUILTIN_SOURCES["train"][0]).is_file():
        pytest.skip("shared data not available")
    # "Ketanserin" is named in BC5CDR dev but in no training document.
    assert build_linker(LinkerConfig()).link("Ketanserin", "Chemical").id == "MESH:D007650"
    train_only = build_linker(LinkerConfig(builtin_splits=("train",)))
    assert train_only.link("Ketanserin", "Chemical").id != "MESH:D007650"
    assert train_only.link("Naloxone", "Chemical") == Link("MESH:D009270", "exact", 1.0)


def test_missing_data_root_says_what_to_do(tmp_path):
    with pytest.raises(OpenMedError, match="OPENMED_RAY_DATA_ROOT"):
        build_linker(LinkerConfig(data_root=str(tmp_path)))
