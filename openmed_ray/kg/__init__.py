"""Knowledge graphs from annotations: linking to ontology IDs, co-occurrence counting,
incremental atomic merges and exports (see pipeline.py for the run)."""
