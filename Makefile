# One-command set-up, tests and book. See README.md.
#   make book         set up, then build the HTML book into _build/html
#   make test         set up, then lint, unit tests, nbval (strict), the strict book
#                     build and the browser test of every page, printing each stage's time
#   make notebooks    re-execute every notebook in place (refresh stored outputs)
#   make claims       train the zoo from SEED (default 1) into a temporary cache and run
#                     the notebooks that use it, checking asserts only (nbval-lax)
#   make zoo-retrain  re-make the shipped zoo weights (NAMES=... for some of them)
#   make lint         ruff

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := dataset-fashion-mnist espeak-ng festival festvox-kallpc16k festvox-us-slt-hts \
  chromium chromium-driver fonts-noto-cjk
NOTEBOOKS := $(shell find book -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' -not -path '*/_build/*' | sort)
# notebooks whose numbers depend on the zoo (the ones `make claims` re-runs)
ZOO_NOTEBOOKS := $(shell grep -lE 'zoo\.[A-Za-z_]' $(NOTEBOOKS))
JB := $(VENV)/bin/jupyter-book build . -W -n --keep-going
KERNEL := $(VENV)/share/jupyter/kernels/mlcomp/kernel.json
SEED ?= 1
NAMES ?=

# Pinned numerics: PyTorch's CPU arithmetic made identical on every x86-64 CPU
# with AVX2 (ATen, oneDNN and MKL held to AVX2; two threads). Read when torch
# is imported, so they are exported to every process make starts. The values
# are those of mlcomp/numerics.py (tests/test_numerics.py checks that they agree);
# MLCOMP_NUMERICS=native turns them off.
ifneq ($(MLCOMP_NUMERICS),native)
export ATEN_CPU_CAPABILITY ?= avx2
export ONEDNN_MAX_CPU_ISA ?= AVX2
export MKL_CBWR ?= AVX2
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2
endif

.PHONY: setup apt zoo zoo-retrain book book-strict browser test unit nbval lint notebooks claims benchmarks clean

setup: apt $(STAMP) $(KERNEL)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@# the learned codec's entropy model is tested against CompressAI's; its
	@# metadata pins numpy<2 (and torch-geometric), which its entropy models do
	@# not need, so it is installed without its dependencies
	$(PY) -m pip install --quiet --no-deps "compressai==1.2.8"
	touch $(STAMP)

# the Jupyter kernel "mlcomp" that the notebooks name: this venv, pinned numerics
$(KERNEL): $(STAMP) mlcomp/numerics.py
	$(VENV)/bin/mlcomp numerics --install-kernel

# Debian packages the book needs: installed when running as root, otherwise
# the one command to run is printed and make stops.
apt:
	@if ! command -v dpkg-query >/dev/null; then \
	  echo "Not a Debian/Ubuntu system: install espeak-ng and festival yourself (and for"; \
	  echo "make browser: Chromium with its chromedriver, and a CJK font such as Noto CJK);"; \
	  echo "see README.md for Fashion-MNIST (MLCOMP_DATA)."; exit 0; fi; \
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

# Verify the shipped reference models (nothing is trained unless a recipe
# changed); zoo-retrain re-makes the shipped weights from their recipes.
zoo: setup
	$(VENV)/bin/mlcomp zoo --quiet
	$(VENV)/bin/mlcomp speech --quiet

zoo-retrain: setup
	$(VENV)/bin/mlcomp zoo --retrain $(NAMES)

book: setup
	$(JB)

unit: zoo
	$(VENV)/bin/mlcomp numerics
	$(PY) -m pytest tests mlcomp

nbval: zoo
	$(PY) -m pytest --nbval --nbval-current-env --nbval-cell-timeout=600 \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg $(NOTEBOOKS)

lint: setup
	$(VENV)/bin/ruff check mlcomp tests benchmarks book
	$(VENV)/bin/ruff format --check mlcomp tests benchmarks book

book-strict: setup
	$(JB)

# Every page of the built book in headless Chromium, offline: console errors,
# formulas typeset, images, internal links, search, the glossary's Chinese font;
# screenshots in _build/screenshots (see tests/book_browser.py).
browser: setup
	$(PY) tests/book_browser.py _build/html

# Each stage in turn, with its time; the first failure stops the run.
test:
	@set -e; times=""; all=$$(date +%s); \
	for stage in setup zoo lint unit nbval book-strict browser; do \
	  start=$$(date +%s); \
	  $(MAKE) --no-print-directory $$stage || { echo "make test: stage $$stage failed"; exit 1; }; \
	  times="$$times$$(printf '  %-12s %5d s' $$stage $$(( $$(date +%s) - start )))\n"; \
	done; \
	printf "make test: all passed; time per stage:\n$$times  %-12s %5d s\n" total $$(( $$(date +%s) - all ))

# Re-execute notebooks in place under the pinned kernel (NB=path for one).
NB ?= $(NOTEBOOKS)
notebooks: zoo
	@for nb in $(NB); do \
	  echo "executing $$nb"; \
	  $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=600 --ExecutePreprocessor.kernel_name=mlcomp "$$nb" || exit 1; \
	done

# Claims that survive a retrained zoo: the whole zoo from SEED, in a temporary
# cache, then every notebook that uses it, with only asserts and errors counted.
# The data sets do not depend on the seed: the usual cache's are linked in.
# The notebooks run two at a time (pytest-xdist, one notebook per worker):
# claims are about asserts, not time, and much of a notebook's time is
# single-threaded (kernel start, imports, Python loops), which the other
# notebook's worker overlaps. Four threads on two cores: OpenMP's waiting
# threads must sleep, not spin (spinning made two at a time slower than one:
# four zoo notebooks took 169 s two at a time, 144 s one at a time, 122 s
# two at a time with OMP_WAIT_POLICY=PASSIVE).
claims: setup
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	data=$${MLCOMP_CACHE:-$$HOME/.cache/mlcomp}; \
	for d in data speech; do mkdir -p "$$data/$$d" && ln -s "$$data/$$d" "$$tmp/$$d"; done; \
	echo "make claims: training the zoo from seed $(SEED) into $$tmp"; \
	export MLCOMP_ZOO_SEED=$(SEED) MLCOMP_CACHE="$$tmp"; \
	$(VENV)/bin/mlcomp zoo --quiet; \
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest --nbval-lax --nbval-current-env \
	  --nbval-cell-timeout=600 -p no:cacheprovider -n 2 --dist loadscope $(ZOO_NOTEBOOKS); \
	echo "make claims: every asserted claim holds for the zoo of seed $(SEED)"

benchmarks: zoo
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf _build .pytest_cache
