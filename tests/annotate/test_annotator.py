"""The in-process annotator: offsets, bad texts, aggregation, HF-compatible output."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openmed_ray.annotate import annotate_texts
from openmed_ray.annotate.annotator import Annotator, check_text
from openmed_ray.models.catalog import UnknownAdapterError


@pytest.fixture(scope="module")
def annotator(tiny_bundle):
    return Annotator([str(tiny_bundle)], threads=1)


def test_finds_entities_with_exact_offsets(annotator):
    text = "The patient had severe asthma after aspirin.\nThen gout ( ibuprofen )."
    (result,) = annotator.annotate([text])
    assert result.status == "ok" and result.n_wordpieces > 0
    found = {(e.text, e.label) for e in result.entities}
    assert {("asthma", "Disease"), ("aspirin", "Chemical"), ("gout", "Disease")} <= found
    for entity in result.entities:
        assert text[entity.start : entity.end] == entity.text
        assert 0.0 < entity.score <= 1.0


def test_bad_texts_become_error_results_in_order(annotator):
    results = annotator.annotate(["aspirin", None, "  \n", b"\xff\xfe", 42, b"gout"])
    assert [r.status for r in results] == ["ok", "error", "error", "error", "error", "ok"]
    assert results[1].error == "text is null"
    assert results[2].error == "text is empty"
    assert "not valid UTF-8" in results[3].error
    assert results[4].error == "text is not a string but int"
    assert results[5].entities[0].text == "gout"


def test_check_text():
    assert check_text("x") == ("x", None)
    assert check_text(b"caf\xc3\xa9") == ("café", None)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["aspirin", "gout", "asthma", "ibuprofen", "the", "(", ")", "-", "."]),
            st.text(
                alphabet=st.characters(
                    codec="utf-8", categories=["L", "M", "N", "P", "S", "Zs", "Cc"]
                ),
                max_size=6,
            ),
            st.sampled_from(["😀", "阿司匹林", "e\u0301", "\t", "\n", "\u00a0", "Ω"]),
        ),
        max_size=40,
    )
)
def test_offsets_always_index_the_original_text(annotator, parts):
    text = " ".join(parts)
    (result,) = annotator.annotate([text])
    if not text.strip():
        assert result.status == "error"
        return
    for entity in result.entities:
        assert text[entity.start : entity.end] == entity.text
        assert entity.text == entity.text.strip() and entity.text


def test_long_document_windows_produce_no_duplicates(tiny_bundle):
    # One 3,000-word "sentence": windows of 64 pieces overlapping by 16.
    small_windows = Annotator([str(tiny_bundle)], threads=1)
    small_windows.backends[0].predictors[0].max_length = 64
    small_windows.backends[0].predictors[0].overlap = 16
    words = ("aspirin causes gout and the patient had fever " * 400).split()
    text = " ".join(words)
    (result,) = small_windows.annotate([text])
    spans = [(e.start, e.end) for e in result.entities]
    assert len(spans) == len(set(spans))
    assert all(text[e.start : e.end] == e.text for e in result.entities)
    # Each word is predicted by exactly one window: spans never overlap, and the whole
    # document (beyond the first windows) is covered.
    ordered = sorted(spans)
    assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:], strict=False))
    assert ordered[-1][1] > len(text) - 60
    aspirin = {e.start for e in result.entities if e.text == "aspirin" and e.label == "Chemical"}
    assert len(aspirin) >= 0.9 * words.count("aspirin")


def test_aggregations_agree_on_single_piece_words(tiny_bundle):
    text = "aspirin and gout"
    spans = {}
    for aggregation in ("first", "average", "max", "simple"):
        (result,) = Annotator([str(tiny_bundle)], aggregation=aggregation, threads=1).annotate(
            [text]
        )
        spans[aggregation] = [(e.start, e.end, e.label) for e in result.entities]
    assert len({tuple(v) for v in spans.values()}) == 1


def test_annotate_texts_matches_the_hf_pipeline_fields(tiny_bundle):
    (entities,) = annotate_texts(["aspirin causes gout"], adapters=[str(tiny_bundle)])
    assert entities and set(entities[0]) == {"entity_group", "score", "word", "start", "end"}
    both = annotate_texts(["aspirin causes gout"], adapters=[str(tiny_bundle), str(tiny_bundle)])
    assert {e["adapter"] for e in both[0]} == {"tiny"}
    with pytest.raises(ValueError, match="text 1: text is empty"):
        annotate_texts(["gout", ""], adapters=[str(tiny_bundle)])


def test_unknown_adapter():
    with pytest.raises(UnknownAdapterError, match="unknown adapter 'nope'"):
        Annotator(["nope"])


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precisions_keep_the_entities(tiny_bundle, annotator, precision):
    import torch

    from tests.annotate.conftest import make_texts

    reduced = Annotator([str(tiny_bundle)], threads=1, precision=precision)
    (predictor,), (full,) = reduced.backends[0].predictors, annotator.backends[0].predictors
    assert predictor.version == f"{full.version}-{precision}"  # never mixed up in outputs
    model = predictor.model
    if precision == "bf16":
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    else:
        assert any("quantized" in type(m).__module__ for m in model.modules())
    texts = make_texts(60, seed=5)
    spans = [{(e.start, e.end, e.label) for e in r.entities} for r in annotator.annotate(texts)]
    reduced_spans = [
        {(e.start, e.end, e.label) for e in r.entities} for r in reduced.annotate(texts)
    ]
    found = sum(len(s) for s in spans)
    agreed = sum(len(a & b) for a, b in zip(spans, reduced_spans, strict=True))
    assert found > 50 and agreed >= 0.95 * found
