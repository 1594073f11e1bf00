"""Relation documents from PubTator: one mention per concept, candidate pairs, checks."""

import pytest

from openmed_ray.io.pubtator import read_pubtator
from openmed_ray.relations.examples import (
    CID_TASK,
    LinkedMention,
    RelationDataError,
    RelationDocument,
    check_mentions,
    from_pubtator,
    gold_triples,
    reachable_share,
)

PUBTATOR = """\
7|t|Lithium and tremor
7|a|Lithium-induced tremor and renal failure; no cisplatin given.
7\t0\t7\tLithium\tChemical\tD008094
7\t12\t18\ttremor\tDisease\tD014202
7\t19\t26\tLithium\tChemical\tD008094
7\t35\t41\ttremor\tDisease\tD014202
7\t46\t59\trenal failure\tDisease\tD051437|D007674
7\t64\t73\tcisplatin\tChemical\t-1
7\tCID\tD008094\tD014202
7\tCID\tD999999\tD014202
"""


def test_pubtator_documents_give_one_mention_per_concept(tmp_path):
    path = tmp_path / "cdr.txt"
    path.write_text(PUBTATOR)
    [document] = from_pubtator(read_pubtator(path), CID_TASK)
    # The composite mention counts for both concepts; the unlinked one (-1) for none.
    assert [m.key for m in document.mentions] == [
        "D008094", "D014202", "D008094", "D014202", "D051437", "D007674"
    ]  # fmt: skip
    assert document.entities("Chemical") == ["D008094"]
    assert document.candidate_pairs(CID_TASK) == [
        ("D008094", "D014202"), ("D008094", "D051437"), ("D008094", "D007674")
    ]  # fmt: skip
    assert gold_triples([document]) == {
        ("7", "D008094", "D014202", "CID"),
        ("7", "D999999", "D014202", "CID"),
    }
    # The second gold pair's chemical is never mentioned: half of the gold is reachable.
    assert reachable_share([document], CID_TASK) == 0.5


def test_a_mention_outside_its_text_names_the_document():
    document = RelationDocument("d9", "short", [LinkedMention(2, 40, "Chemical", "C1")])
    with pytest.raises(RelationDataError, match=r"document d9: mention 2\.\.40 .*outside"):
        check_mentions(document)
