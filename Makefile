# Build a Large Language Model from Scratch: one entry point for readers, authors and CI.
#   make book   install, execute every chapter, build HTML and PDF
#   make test   install, unit tests, nbval on every chapter, HTML and PDF build (warnings = errors)
#   make bench  speed and quality benchmarks, printed as ratios against references
#   make lab    open the chapters in JupyterLab with the project's environment

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JOBS ?= 2

# Tests and CI read the corpus from the read-only mirror beside the clone, when there is one.
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/tinyshakespeare.txt),)
export BUILDLLM_DATA_DIR ?= $(SHARED_DATA)
endif
export PYDEVD_DISABLE_FILE_VALIDATION := 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: all install tex book html pdf test test-unit test-notebooks test-notebooks-other-cpu test-book browser bench lab execute figures lint clean

all: book

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version' \
	  || { echo "error: set PYTHON=/path/to/python3.11 (make PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP)

tex:
	@bash scripts/ensure-tex.sh

# ---- the book -------------------------------------------------------------------------------
# `make book` executes every chapter (through jupyter-cache, so the PDF reuses the HTML's run).
book: install tex
	$(BIN)/jupyter-book build . -W --keep-going
	$(BIN)/jupyter-book build . -W --keep-going --builder pdflatex
	@echo "HTML: _build/html/index.html   PDF: _build/latex/book.pdf"

# The HTML and PDF from the stored (already verified) outputs, without executing anything.
_build/config-stored.yml: _config.yml Makefile
	@mkdir -p _build
	sed -e 's/execute_notebooks: cache/execute_notebooks: "off"/' \
	    -e 's|bookstyle: book/_ext|bookstyle: ../book/_ext|' _config.yml > $@

html: install _build/config-stored.yml
	$(BIN)/jupyter-book build . -W --keep-going --config _build/config-stored.yml

pdf: install tex _build/config-stored.yml
	$(BIN)/jupyter-book build . -W --keep-going --builder pdflatex --config _build/config-stored.yml
	@test -s _build/latex/book.pdf && echo "PDF: _build/latex/book.pdf"
	@if grep -n "has occurred while .output is active" _build/latex/book.log; then \
	  echo "PDF: a page overflows (text or code runs off it; see _build/latex/book.log)"; exit 1; fi
	$(BIN)/python scripts/check_pdf.py _build/latex/book.pdf

# ---- tests ----------------------------------------------------------------------------------
test: install tex
	$(BIN)/ruff check code tests bench scripts
	$(MAKE) --no-print-directory test-unit test-notebooks test-notebooks-other-cpu test-book

test-unit: install
	$(BIN)/python -m pytest -q -n $(JOBS) -m "not browser" tests

# nbval re-runs every chapter and compares each output with the stored one; figures are not
# compared (the plugin tests/nbval_figures.py), text is, exactly.
NBVAL = PYTHONPATH=tests $(BIN)/python -m pytest -q -n $(JOBS) --dist loadscope -p nbval_figures \
	  --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
	  --nbval-cell-timeout 1200 $$($(BIN)/python tests/book_checks.py)

test-notebooks: install
	$(NBVAL)

# The same check in a second numeric environment, a stand-in for a reader's CPU: kernels other
# than this CPU's best (AVX2 where AVX-512 is the best, PyTorch's portable ones and MKL/oneDNN
# at SSE4 where AVX2 is) add floating-point numbers in other orders, so the last bits of sums
# differ (scripts/other_cpu_env.py chooses and prints them). The book's model is trained again
# there, in a cache of its own, as a reader's machine would train it.
test-notebooks-other-cpu: install
	env $$($(BIN)/python scripts/other_cpu_env.py) \
	  BUILDLLM_CACHE_DIR=$(abspath _build/cache-other-cpu) $(NBVAL)

# The book builds (warnings are errors), and every page reads well in a real browser.
test-book: html pdf browser
	$(BIN)/python -m pytest -q -m browser tests/test_html.py

browser:
	@bash scripts/ensure-browser.sh

# ---- benchmarks, lab, authoring -------------------------------------------------------------
bench: install
	$(BIN)/python -m bench $(BENCH)

# Jupyter refuses to run as root unless told (containers, CI machines run as root).
lab: install
	$(BIN)/jupyter lab book/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# Re-execute chapters in place after editing them: make execute [NB=book/01_tokens.ipynb]
execute: install
	$(BIN)/python scripts/execute_notebooks.py $(NB)

figures: install
	$(BIN)/python scripts/make_figures.py

lint: install
	$(BIN)/ruff check code tests bench scripts

clean:
	rm -rf _build
