# Everything runs inside .venv, made by `make setup` from constraints.txt.
# Inside the Merlin container (stack already installed): make demo VENV_PYTHON=python SETUP=
PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON ?= $(VENV)/bin/python
SETUP ?= $(VENV)/.installed
APP = $(VENV_PYTHON) -m t4r_app

CONFIG ?= configs/default.yaml
INPUT ?= recommandation.zip
DATA_DIR ?= data/processed
DEMO_DIR ?= data/demo
OVERRIDES ?=

.PHONY: setup demo test preprocess bench bench-etl clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: $(SETUP)  ## create .venv with the pinned Merlin stack (no-op when up to date)

$(VENV)/.installed: constraints.txt pyproject.toml
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	# pip 23.x on purpose: newer pip refuses transformers4rec (its docs extra has a direct URL)
	$(VENV_PYTHON) -m pip install -q "pip>=23,<24"
	$(VENV_PYTHON) -m pip install -q -c constraints.txt setuptools wheel
	$(VENV_PYTHON) -m pip install -q -c constraints.txt --no-build-isolation -e ".[test]"
	touch $@

demo: $(SETUP)  ## generate sample sessions, preprocess them, print the summary
	$(APP) generate --output $(DEMO_DIR)/raw --users 3000 --movies 500 --seed 7 --zip
	$(APP) preprocess --config configs/demo.yaml --input $(DEMO_DIR)/raw/recommandation.zip --output $(DEMO_DIR)/processed $(OVERRIDES)

test: $(SETUP)  ## run the test suite
	$(VENV_PYTHON) -m pytest -q

preprocess: $(SETUP)  ## INPUT=recommandation.zip DATA_DIR=data/processed CONFIG=... OVERRIDES="key=value ..."
	$(APP) preprocess --config $(CONFIG) --input $(INPUT) --output $(DATA_DIR) $(OVERRIDES)

bench: bench-etl  ## all benchmarks (JSON under bench/results/)

bench-etl: $(SETUP)  ## ETL throughput at 1M and 10M interactions -> bench/results/etl.json
	$(VENV_PYTHON) bench/bench_etl.py --output bench/results/etl.json

clean:  ## remove generated data (keeps .venv)
	rm -rf data bench/work
