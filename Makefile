# vismap: the course's commands. Every target builds (or reuses) the environment in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: lab test test-fast lint test-browser train figures bench exercises slides book clean-env help

help:
	@echo "make lab      - create .venv if needed and open JupyterLab (repository root) on notebooks/00"
	@echo "make test     - lint (ruff + mypy on lib/), library tests, every notebook under nbval"
	@echo "make test-fast - library tests without the notebooks and slow tests (under a minute)"
	@echo "make lint     - ruff (lint + format check) and mypy on lib/"
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

test: lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(XDIST) --nbval-lax --nbval-current-env

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(XDIST) -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check lib
	$(BIN)/ruff format --check lib
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
	$(BIN)/python scripts/make_book.py

test-browser: $(STAMP)
	$(BIN)/python scripts/browser_test.py
	test ! -f build/book/index.html || $(BIN)/python scripts/browser_test_book.py

clean-env:
	rm -rf $(VENV)
