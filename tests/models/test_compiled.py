"""torch.compile for inference: when a run compiles, and that it changes no prediction."""

import pytest

from openmed_ray.config import AnnotateConfig
from openmed_ray.errors import ConfigError
from openmed_ray.models.compiled import AUTO_MIN_DOCS_PER_ACTOR, choose_compile


def test_auto_compiles_only_runs_long_enough_to_pay_for_it():
    def choice(requested="auto", runtime="torch", precisions=("fp32",), docs=1e6, streams=1):
        return choose_compile(
            requested,
            runtime=runtime,
            precisions=list(precisions),
            docs_per_actor=docs,
            streams=streams,
        )

    assert choice().compile
    short = choice(docs=AUTO_MIN_DOCS_PER_ACTOR - 1)
    assert not short.compile and f"fewer than the {AUTO_MIN_DOCS_PER_ACTOR}" in short.reason
    assert choice(docs=AUTO_MIN_DOCS_PER_ACTOR).compile
    assert not choice(docs=None).compile
    assert choice("on", docs=10).compile and not choice("off").compile
    # Two passes in flight run faster eager: auto leaves them so, `on` still compiles.
    two_streams = choice(streams=2)
    assert not two_streams.compile and "2 streams" in two_streams.reason
    assert choice("on", streams=2).compile
    # int8 and onnx have their own kernels: even `on` leaves them eager, saying why.
    assert "fp32 or bf16" in choice("on", precisions=("int8",)).reason
    assert not choice("on", runtime="onnx").compile
    assert choice(precisions=("int8", "bf16")).compile
    with pytest.raises(ValueError, match="compile must be one of"):
        choice("yes")
    with pytest.raises(ConfigError, match="compile: one of"):
        AnnotateConfig(input="corpus", output="out", compile="yes")


@pytest.mark.parametrize("bundle", ["tiny_bundle", "tiny_multitask_bundle"])
def test_a_compiled_annotator_finds_the_same_entities(bundle, request):
    from openmed_ray.annotate.annotator import Annotator
    from tests.annotate.conftest import make_texts

    texts = make_texts(40, seed=3)
    adapter = str(request.getfixturevalue(bundle))
    eager = Annotator([adapter], threads=1)
    compiled = Annotator([adapter], threads=1, compile=True)
    (predictor,) = compiled.backends[0].predictors
    assert type(predictor.model).__name__ == "OptimizedModule"

    def entities(annotator):
        found = [
            (i, e.start, e.end, e.label, e.score)
            for i, r in enumerate(annotator.annotate(texts))
            for e in r.entities
        ]
        return [e[:4] for e in found], [e[4] for e in found]

    spans, scores = entities(eager)
    assert len(spans) > 30
    # Batches of every length (dynamic shapes: one graph), then the same batch again.
    for _ in range(2):
        compiled_spans, compiled_scores = entities(compiled)
        assert compiled_spans == spans
        assert compiled_scores == pytest.approx(scores, abs=1e-4)
