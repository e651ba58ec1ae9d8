# TMR Kit: every target creates .venv and installs the kit on first use (idempotent).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PRESET ?= cpu# the recipe: ci / cpu / gpu (how to train)
SIZE   ?= cpu# a dataset size for `make data`: ci / cpu / full (what to train on)
DATA   ?=# a competition folder; empty: the recipe's own (ci -> data/tmr-ci, cpu and gpu -> data/tmr-cpu)

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
	$(PY) -m tmr_lib demo --preset $(PRESET) $(if $(DATA),--data $(DATA),)

## Unit tests, then the notebooks under TMR_PRESET=ci with nbval.
test: $(STAMP)
	$(PY) -m pytest tests
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
		TMR_PRESET=ci $(PY) -m pytest --nbval-lax -p no:cacheprovider notebooks; \
	else echo "no notebooks yet"; fi

## Build the competition of dataset size SIZE (default cpu) into DATA (default data/tmr-SIZE).
data: $(STAMP)
	$(PY) -m tmr_lib data build --size $(SIZE) --out $(if $(DATA),$(DATA),data/tmr-$(SIZE))

## Execute the notebooks with PRESET (default cpu) and write HTML handouts, student copies
## (no solutions) and teacher's copies into handouts/ (git-ignored); see tools/handouts.py.
handouts: $(STAMP)
	$(PY) tools/handouts.py --preset $(PRESET) --out handouts

## JupyterLab on the notebooks (as root too: workshop containers run as root).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root,)

clean-data:
	rm -rf data/tmr-*
