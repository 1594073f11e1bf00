# Every target installs what it needs first (scripts/setup.sh is idempotent and a no-op when current).
VENV ?= .venv
PY := $(VENV)/bin/python
export RAY_AUTH_MODE ?= disabled
# Let Python cache compiled modules: with PYTHONDONTWRITEBYTECODE set (as on this machine),
# every process, each test's Ray workers and CLI subprocesses included, recompiled torch, ray
# and transformers from source (two Ray pipeline tests: 140 s without the cache, 53 s with it).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test test-spacy lint format adapters clean

# Train (or reuse cached runs of) the MiniLM adapters and refresh openmed_ray/adapters/.
adapters: setup
	$(PY) benchmarks/f1_table.py --datasets BC5CDR-disease,BC5CDR-chem,NCBI-disease,BC2GM,s800,linnaeus --configs all-linear --budget-minutes 10 --ship

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m openmed_ray.demo

test: setup
	$(PY) -m pytest -q
	$(MAKE) test-spacy

# spaCy 3.7 (what en_chem_ner and Med7 need) is built against NumPy 1, so the spaCy backend's
# tests run in their own environment with the `spacy-test` extra.
test-spacy:
	@VENV=.venv-spacy EXTRAS=spacy-test bash scripts/setup.sh
	.venv-spacy/bin/python -m pytest -q -m spacy

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .venv-spacy .pytest_cache
