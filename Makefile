# Every target installs what it needs first (scripts/setup.sh is idempotent and a no-op when current).
VENV ?= .venv
PY := $(VENV)/bin/python
export RAY_AUTH_MODE ?= disabled

.PHONY: setup demo test lint format adapters clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m openmed_ray.demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache
