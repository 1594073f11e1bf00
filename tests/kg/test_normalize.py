from openmed_ray.kg.normalize import canonical_id, case_form, local_id, punct_form


def test_forms():
    assert case_form("  Type 2\u00a0 Diabetes ") == "type 2 diabetes"
    assert punct_form("Alpha-methyl-DOPA") == "alpha methyl dopa"
    assert punct_form("Parkinson's disease") == punct_form("Parkinsons Disease")
    assert punct_form("[3H]-naloxone") == "3h naloxone"


def test_ids():
    assert canonical_id("D009270") == "MESH:D009270"
    assert canonical_id("C012345") == "MESH:C012345"
    assert canonical_id("OMIM:601649") == "OMIM:601649"
    assert local_id("Disease", "Gastric  Bleeding!") == "Disease:gastric bleeding"
