# One-command set-up, tests and book. See README.md.
#   make book       set up, then build the HTML book into _build/html
#   make test       set up, then lint, unit tests, nbval (strict) and the strict book build
#   make notebooks  re-execute every notebook in place (refresh stored outputs)
#   make lint       ruff

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := dataset-fashion-mnist espeak-ng festival festvox-kallpc16k festvox-us-slt-hts
NOTEBOOKS := $(shell find book -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' -not -path '*/_build/*' | sort)
JB := $(VENV)/bin/jupyter-book build . -W -n --keep-going

.PHONY: setup apt zoo book test unit nbval lint notebooks benchmarks clean

setup: apt $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# Debian packages the book needs: installed when running as root, otherwise
# the one command to run is printed and make stops.
apt:
	@if ! command -v dpkg-query >/dev/null; then \
	  echo "Not a Debian/Ubuntu system: install espeak-ng and festival yourself, and see"; \
	  echo "README.md for Fashion-MNIST (MLCOMP_DATA)."; exit 0; fi; \
	missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "Missing Debian packages:$$missing"; \
	  echo "Run this once, then run make again:"; \
	  echo "  sudo apt-get update && sudo apt-get install -y$$missing"; \
	  exit 1; \
	fi

# Train (or verify the cache of) the reference models every chapter uses.
zoo: setup
	$(VENV)/bin/mlcomp zoo

book: setup
	$(JB)

unit: zoo
	$(PY) -m pytest tests mlcomp

nbval: zoo
	$(PY) -m pytest --nbval --nbval-current-env --nbval-cell-timeout=600 \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg $(NOTEBOOKS)

lint: setup
	$(VENV)/bin/ruff check mlcomp tests benchmarks book
	$(VENV)/bin/ruff format --check mlcomp tests benchmarks book

test: setup lint unit nbval
	$(JB)
	@echo "make test: all passed"

notebooks: zoo
	@for nb in $(NOTEBOOKS); do \
	  echo "executing $$nb"; \
	  $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=600 --ExecutePreprocessor.kernel_name=python3 "$$nb" || exit 1; \
	done

benchmarks: zoo
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf _build .pytest_cache
