# vismap: the course's commands. Every target builds (or reuses) the environment in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: lab test train figures bench clean-env help

help:
	@echo "make lab      - create .venv if needed and open JupyterLab on notebooks/"
	@echo "make test     - library tests + every notebook under nbval"
	@echo "make train    - retrain every checkpoint in data/ and rewrite data/MANIFEST.json"
	@echo "make figures  - remake the README's figures in docs/"
	@echo "make bench    - time the explanation methods against their limits and captum"

# (Re)install when .venv is missing or pyproject.toml changed since the last install.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

test: $(STAMP)
	$(BIN)/python -m pytest

train: $(STAMP)
	$(BIN)/python -m vismap.train

figures: $(STAMP)
	$(BIN)/python scripts/make_figures.py

bench: $(STAMP)
	$(BIN)/python -m vismap.bench

clean-env:
	rm -rf $(VENV)
