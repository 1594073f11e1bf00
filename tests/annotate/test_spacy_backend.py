"""The spaCy backend with a real spaCy 3.7 pipeline (en_chem_ner), alone and mixed with a
transformer adapter in one Ray Data pass. Runs in `make test-spacy`."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.spacy, pytest.mark.slow]
en_chem_ner = pytest.importorskip("en_chem_ner")

TEXTS = [
    "Patients received cisplatin and aspirin for severe asthma.",
    "Warfarin, heparin and lithium were stopped; gout improved with ibuprofen.",
    "No drugs were given.",
]


def test_backend_matches_spacy_and_keeps_offsets_across_chunks():
    from openmed_ray.annotate.backends.spacy import SpacyBackend

    nlp = en_chem_ner.load()
    backend = SpacyBackend("spacy:en_chem_ner", batch_size=8)
    for text, output in zip(TEXTS, backend.annotate(TEXTS), strict=True):
        expected = [(e.start_char, e.end_char, e.label_) for e in nlp(text).ents]
        assert [(e.start, e.end, e.label) for e in output.entities] == expected
        assert {(e.adapter, e.adapter_version) for e in output.entities} <= {
            ("en_chem_ner", "0.1.0")
        }

    # A long document is cut into sentence-aligned chunks; offsets stay document offsets.
    sentence = "Patients received cisplatin. "
    long_text = sentence * 400
    chunked = SpacyBackend("spacy:en_chem_ner", max_chunk_chars=300).annotate([long_text])[0]
    assert len(chunked.entities) == 400
    for k, entity in enumerate(chunked.entities):
        assert long_text[entity.start : entity.end] == entity.text == "cisplatin"
        assert entity.start == k * len(sentence) + sentence.index("cisplatin")


def test_spacy_and_transformer_adapters_in_one_ray_pass(ray_local, tiny_bundle, tmp_path):
    from openmed_ray.annotate.pipeline import annotate_corpus
    from openmed_ray.config import AnnotateConfig
    from openmed_ray.io.annotations import DOCUMENTS, ENTITIES, read_parts

    corpus = tmp_path / "corpus.parquet"
    ids = [f"d{i}" for i in range(len(TEXTS))] + ["empty"]
    pq.write_table(pa.table({"doc_id": ids, "text": [*TEXTS, " "]}), corpus)
    summary = annotate_corpus(
        AnnotateConfig(
            input=str(corpus),
            output=str(tmp_path / "out"),
            adapters=(str(tiny_bundle), "spacy:en_chem_ner"),
            threads_per_actor=1,
        )
    )
    assert {a["adapter"]: a["version"] for a in summary["adapter_versions"]}["en_chem_ner"] == (
        "0.1.0"
    )
    documents = read_parts(str(tmp_path / "out"), DOCUMENTS).to_pylist()
    assert sorted(d["doc_id"] for d in documents) == sorted(ids)
    assert {d["doc_id"]: d["status"] for d in documents}["empty"] == "error"
    entities = read_parts(str(tmp_path / "out"), ENTITIES).to_pylist()
    texts = dict(zip(ids, TEXTS, strict=False))
    assert {e["adapter"] for e in entities} == {"tiny", "en_chem_ner"}
    for entity in entities:
        assert texts[entity["doc_id"]][entity["start"] : entity["end"]] == entity["text"]
    spacy_found = {(e["doc_id"], e["text"]) for e in entities if e["adapter"] == "en_chem_ner"}
    nlp = en_chem_ner.load()
    assert spacy_found == {(i, e.text) for i, t in texts.items() for e in nlp(t).ents}
