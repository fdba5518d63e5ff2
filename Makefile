# vismap: the course's commands. Every target builds (or reuses) the environment in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: lab test test-fast test-portable lint test-browser train figures bench exercises slides book clean-env help

help:
	@echo "make lab      - create .venv if needed and open JupyterLab (repository root) on notebooks/00"
	@echo "make test     - lint (ruff, mypy), library tests, every notebook under nbval"
	@echo "make test-fast - library tests without the notebooks and slow tests (under a minute)"
	@echo "make test-portable - the equality claims (tests and notebooks marked portable) again under two other CPU dispatch settings"
	@echo "make lint     - ruff (lint + format check) on lib/ scripts/ tests/ benchmarks/, mypy on lib/"
	@echo "make train    - retrain every checkpoint in data/ and rewrite data/MANIFEST.json"
	@echo "make figures  - remake the README's figures in docs/"
	@echo "make bench    - time the explanation methods against their limits, captum and pytorch-grad-cam"
	@echo "make exercises - student versions of the notebooks in build/exercises/ (nbgrader)"
	@echo "make slides   - the talk in English and Chinese: build/talk.slides.html, build/talk_zh.slides.html (offline)"
	@echo "make book     - the course as a book: build/book/index.html, every chapter executed (offline)"
	@echo "make test-browser - notebooks in JupyterLab, both talk decks and the book (if built) in headless Chromium"

# (Re)install when .venv is missing or pyproject.toml changed since the last install.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/00_start_here.ipynb

# One pytest worker per core (pytest-xdist), each file (each notebook: its cells run in order
# in one kernel) on one worker, one torch thread per worker: these small models gain far more
# from two processes than from two threads.
XDIST := -n auto --dist loadfile

# talk_zh's code cells are the English talk's (test_slides keeps them identical), so make test
# runs the English deck only; make slides and make book execute both.
NOTEBOOK_TESTS := --nbval-lax --nbval-current-env --ignore=notebooks/talk_zh.ipynb

test: lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(XDIST) $(NOTEBOOK_TESTS)

# The equality claims again, as two other students' CPUs would compute them: (1) a laptop with
# AVX2 and no AVX-512 (ATen's AVX2 kernels, oneDNN limited to AVX2), one thread; (2) an older or
# a plain build (ATen's scalar kernels, oneDNN limited to SSE4.1), two threads, which also split
# the reductions differently. Each changes the last bits of float32 results. The executions are
# kept apart from make test's (those feed the book).
PORTABLE := -m portable $(NOTEBOOK_TESTS)
test-portable: $(STAMP)
	VISMAP_EXECUTED_DIR=build/portable ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 \
	  OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(XDIST) $(PORTABLE)
	VISMAP_EXECUTED_DIR=build/portable ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 \
	  OMP_NUM_THREADS=2 $(BIN)/python -m pytest -n 1 $(PORTABLE)

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(XDIST) -m "not slow" tests

LINTED := lib scripts tests benchmarks
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy lib

train: $(STAMP)
	$(BIN)/python -m vismap.train

figures: $(STAMP)
	$(BIN)/python scripts/make_figures.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

exercises: $(STAMP)
	$(BIN)/python scripts/make_exercises.py

slides: $(STAMP)
	$(BIN)/python scripts/make_slides.py

book: $(STAMP)
	$(BIN)/python -m scripts.make_book

test-browser: $(STAMP)
	$(BIN)/python scripts/browser_test.py
	test ! -f build/book/index.html || $(BIN)/python -m scripts.browser_test_book

clean-env:
	rm -rf $(VENV)
