"""Hand-made annotate outputs, texts and a dictionary for the knowledge-graph tests."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openmed_ray.config import KGConfig
from openmed_ray.io.annotations import DOCUMENT_SCHEMA, ENTITY_SCHEMA

TEXTS = {
    "d1": "Aspirin reduced the fever. Later, aspirin caused gastric bleeding.",
    "d2": "Puromycin aminonucleoside (PAN) induced nephrosis in rats. PAN is toxic.",
    "d3": "Cisplatin-induced nephrotoxicity was severe. Fever followed.",
    "d4": "No entity is mentioned in this document at all.",
    "d5": "Acetylsalicylic acid and Warfarin raised the bleeding risk in E. coli sepsis.",
    "d6": "Gastric Bleeding after aspirin; cisplatin and nephrosis elsewhere.",
}
# (surface, label) in text order; a surface repeated in a text is annotated at each occurrence
MENTIONS = {
    "d1": [("Aspirin", "Chemical"), ("fever", "Disease"), ("aspirin", "Chemical"),
           ("gastric bleeding", "Disease")],
    "d2": [("Puromycin aminonucleoside", "Chemical"), ("PAN", "Chemical"), ("nephrosis", "Disease"),
           ("PAN", "Chemical")],
    "d3": [("Cisplatin", "Chemical"), ("nephrotoxicity", "Disease"), ("Fever", "Disease")],
    "d4": [],
    "d5": [("Acetylsalicylic acid", "Chemical"), ("Warfarin", "Chemical"), ("bleeding", "Disease"),
           ("E. coli", "Species"), ("sepsis", "Disease")],
    "d6": [("Gastric Bleeding", "Disease"), ("aspirin", "Chemical"), ("cisplatin", "Chemical"),
           ("nephrosis", "Disease")],
}  # fmt: skip
DICTIONARY = """# string<TAB>id<TAB>type
aspirin\tD001241\tChemical
acetylsalicylic acid\tD001241\tChemical
fever\tD005334\tDisease
gastric bleeding\tD006471\tDisease
gastrointestinal hemorrhage\tD006471\tDisease
puromycin aminonucleoside\tD011692\tChemical
nephrosis\tD009401\tDisease
cisplatin\tD002945\tChemical
nephrotoxicity\tD007674\tDisease
warfarin\tD014859\tChemical
"""


def entity_rows(doc_id: str) -> list[dict]:
    text, rows, cursor = TEXTS[doc_id], [], 0
    for surface, label in MENTIONS[doc_id]:
        start = text.index(surface, cursor)
        cursor = start + len(surface)
        rows.append(
            {
                "doc_id": doc_id,
                "start": start,
                "end": cursor,
                "text": surface,
                "label": label,
                "score": 0.9,
                "adapter": label.lower(),
                "adapter_version": "test",
            }
        )
    return rows


def write_partition(root, name: str, doc_ids: list[str], part: str = "part-0.parquet"):
    """An annotate output ROOT/NAME/{entities,documents}/PART for these documents."""
    for kind in ("entities", "documents"):
        (root / name / kind).mkdir(parents=True, exist_ok=True)
    entities = [row for doc_id in doc_ids for row in entity_rows(doc_id)]
    pq.write_table(
        pa.Table.from_pylist(entities, schema=ENTITY_SCHEMA), root / name / "entities" / part
    )
    documents = [
        {
            "doc_id": doc_id,
            "status": "ok",
            "error": None,
            "n_chars": len(TEXTS[doc_id]),
            "n_wordpieces": 0,
            "n_entities": len(MENTIONS[doc_id]),
            "run_id": name,
        }
        for doc_id in doc_ids
    ]
    pq.write_table(
        pa.Table.from_pylist(documents, schema=DOCUMENT_SCHEMA), root / name / "documents" / part
    )
    return root / name


def write_texts(path, doc_ids=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = doc_ids or list(TEXTS)
    pq.write_table(pa.table({"doc_id": ids, "text": [TEXTS[d] for d in ids]}), path)
    return path


def make_inputs(directory):
    """(entities dir, texts file, dictionary file) with partitions day1 (d1-d3) and day2
    (d4-d6) in the layout of one annotate output per day."""
    entities = directory / "ner"
    write_partition(entities, "day1", ["d1", "d2", "d3"])
    write_partition(entities, "day2", ["d4", "d5", "d6"])
    texts = write_texts(directory / "texts" / "docs.parquet")
    dictionary = directory / "dictionary.tsv"
    dictionary.write_text(DICTIONARY)
    return entities, texts, dictionary


@pytest.fixture
def kg_inputs(tmp_path):
    return make_inputs(tmp_path)


def make_config(entities, texts, dictionary, graph, **changes) -> KGConfig:
    linker = {"builtin": False, "dictionaries": [str(dictionary)], "threshold": 0.6}
    linker.update(changes.pop("linker", {}))
    return KGConfig(
        entities=str(entities),
        documents=str(texts),
        graph=str(graph),
        linker=linker,
        docs_per_batch=2,
        **changes,
    )
