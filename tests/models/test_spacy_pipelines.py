"""spaCy pipelines as adapters: a clear error without spaCy, and version conflicts found at
load time with the pipeline's required range in the message."""

import importlib.util
import json

import pytest

from openmed_ray.models.adapters import identify_adapter
from openmed_ray.models.spacy_pipelines import SpacyError, check_compatible, describe_pipeline

HAS_SPACY = importlib.util.find_spec("spacy") is not None


def test_a_version_outside_the_pipeline_range_names_the_range():
    meta = {"version": "0.1.0", "spacy_version": ">=3.7.5,<3.8.0"}
    check_compatible("en_chem_ner", meta, "3.7.5")
    with pytest.raises(SpacyError, match=r"requires spaCy >=3.7.5,<3.8.0, but spaCy 3.8.2"):
        check_compatible("en_chem_ner", meta, "3.8.2")
    with pytest.raises(SpacyError, match="unreadable spacy_version"):
        check_compatible("x", {"spacy_version": "three"}, "3.8.2")


@pytest.mark.skipif(HAS_SPACY, reason="checks the message shown when spaCy is missing")
def test_without_spacy_a_spacy_adapter_says_how_to_install_it():
    from openmed_ray.annotate.annotator import Annotator

    with pytest.raises(SpacyError, match=r"pip install 'openmed-ray\[spacy\]'"):
        identify_adapter("spacy:en_chem_ner")
    with pytest.raises(SpacyError, match=r"pip install 'openmed-ray\[spacy\]'"):
        Annotator(["spacy:en_chem_ner"])


@pytest.mark.spacy
def test_a_pipeline_built_for_another_spacy_is_refused_at_load(tmp_path):
    spacy = pytest.importorskip("spacy")
    directory = tmp_path / "pipeline"
    spacy.blank("en").to_disk(directory)
    meta = json.loads((directory / "meta.json").read_text())
    name, version, location = describe_pipeline(f"spacy:{directory}")
    assert (name, location) == (f"en_{meta['name']}", directory)

    meta["spacy_version"] = ">=9.0.0,<9.1.0"
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SpacyError, match=r"requires spaCy >=9.0.0,<9.1.0"):
        identify_adapter(f"spacy:{directory}")


@pytest.mark.spacy
def test_missing_pipelines_fail_clearly():
    pytest.importorskip("spacy")
    with pytest.raises(SpacyError, match="neither an installed package nor a directory"):
        identify_adapter("spacy:en_no_such_pipeline")
    with pytest.raises(SpacyError, match="name a pipeline"):
        identify_adapter("spacy:")
