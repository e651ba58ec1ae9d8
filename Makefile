# TMR Kit: every target creates .venv and installs the kit on first use (idempotent).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PRESET ?= cpu
DATA   ?= data/tmr-$(PRESET)

.PHONY: setup demo test data lab clean-data handouts

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)
	@echo "TMR Kit installed in $(VENV)"

## The main job: dataset if missing -> train -> index -> predict -> score -> local leaderboard.
demo: $(STAMP)
	$(PY) -m tmr_lib demo --preset $(PRESET) --data $(DATA)

## Unit tests, then the notebooks under TMR_PRESET=ci with nbval.
test: $(STAMP)
	$(PY) -m pytest tests
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
		TMR_PRESET=ci $(PY) -m pytest --nbval-lax -p no:cacheprovider notebooks; \
	else echo "no notebooks yet"; fi

## Build the competition dataset for PRESET (default cpu) into DATA.
data: $(STAMP)
	$(PY) -m tmr_lib data build --preset $(PRESET) --out $(DATA)

## Execute the notebooks with PRESET (default cpu) and write HTML handouts, student copies
## (no solutions) and teacher's copies into handouts/ (git-ignored); see tools/handouts.py.
handouts: $(STAMP)
	$(PY) tools/handouts.py --preset $(PRESET) --out handouts

## JupyterLab on the notebooks.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

clean-data:
	rm -rf data/tmr-*
