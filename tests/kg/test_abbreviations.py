"""Schwartz-Hearst abbreviation definitions on hand-made sentences."""

import pytest

from openmed_ray.kg.abbreviations import abbreviation_map, best_long_form, find_abbreviations
from openmed_ray.text.tokenize import sentence_spans


def definitions(text: str) -> list[tuple[str, str]]:
    found = find_abbreviations(text, sentence_spans(text))
    for a in found:  # offsets point at the strings
        assert text[a.short_start : a.short_end] == a.short
        assert text[a.long_start : a.long_end] == a.long
    return [(a.short, a.long) for a in found]


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Rats given puromycin aminonucleoside (PAN) developed nephrosis.",
            [("PAN", "puromycin aminonucleoside")],
        ),
        # the long form starts at the word whose initial matches, not earlier
        ("We measured the heart rate variability (HRV) daily.", [("HRV", "heart rate variability")]),
        # "; ..." and ", ..." after the short form are not part of it
        ("Levels of tumor necrosis factor (TNF; see below) rose.", [("TNF", "tumor necrosis factor")]),
        ("Patients with Parkinson's disease (PD, n = 12) and 5-fluorouracil (5-FU) were seen.",
         [("PD", "Parkinson's disease"), ("5-FU", "5-fluorouracil")]),
        # short form first, long form in the parenthesis
        ("The PAN (puromycin aminonucleoside) model is used.", [("PAN", "puromycin aminonucleoside")]),
        # parentheses that define nothing
        ("It rose (p < 0.05) in the treated group (n = 12).", []),
        ("Blood pressure rose (Table 1).", []),
        # a long form never reaches back over an earlier parenthesis
        ("blood pressure (BP) and (BP) again.", [("BP", "blood pressure")]),
    ],
)  # fmt: skip
def test_definitions(text, expected):
    assert definitions(text) == expected


def test_definitions_stay_inside_their_sentence():
    text = "The drug was puromycin. Aminonucleoside (PAN) is different."
    # "puromycin" lies in the previous sentence, so only the words after it may define PAN
    assert definitions(text) == []


def test_first_definition_wins_in_a_document():
    text = "Peripheral artery disease (PAD) is common. Pad area disorder (PAD) is rare."
    assert abbreviation_map(find_abbreviations(text, sentence_spans(text))) == {
        "PAD": "Peripheral artery disease"
    }


def test_best_long_form_matches_characters_right_to_left():
    assert best_long_form("HRV", "we measured heart rate variability") == len("we measured ")
    assert best_long_form("XYZ", "heart rate variability") is None
