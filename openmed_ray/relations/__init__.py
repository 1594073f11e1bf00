"""Relation extraction between linked entities: candidate pairs, encoder inputs with entity
markers, and the relation datasets (BC5CDR chemical-induced disease first)."""
