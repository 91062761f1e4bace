# The README's two commands:  `make demo`  (set up + run the whole pipeline on phantoms)
#                             `make test`  (set up + pass the test suite)
# Both create a local virtual environment in .venv on first use.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
STAMP   = $(VENV)/.installed
SHELL  := /bin/bash
# Read and write text as UTF-8 whatever the machine's locale (notebooks hold non-ASCII text).
export PYTHONUTF8 := 1
# pip's log goes to a file (it warns once per package about empty local index folders); on failure
# the meaningful lines are printed.
QUIET   = > $(VENV)/pip.log 2>&1 || { grep -v "is ignored: it is neither" $(VENV)/pip.log | tail -30; exit 1; }
RUN    ?= runs/demo

.PHONY: demo test test-fast install bench viewer lab clean

demo: $(STAMP)
	$(VENV)/bin/kidneyseg pipeline --profile demo --out $(RUN)

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not browser"

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e ".[test]" $(QUIET)
	$(PY) -c "import kidneyseg, torch, nibabel, papermill, voila" && touch $(STAMP)

# Baselines for benchmarks/ (nnU-Net, MONAI); the constraint keeps the CPU torch.
bench: $(STAMP)
	$(PIP) install -q -c constraints.txt nnunetv2 monai $(QUIET)

viewer: $(STAMP)
	$(VENV)/bin/kidneyseg viewer $(RUN)

# JupyterLab on 127.0.0.1 (no token, no browser tab, offline) with notebooks/; notebook 01 reads
# the run's manifest (runs/demo/data/manifest.csv). LAB_ARGS: more `jupyter lab` options.
lab: $(STAMP)
	$(PY) -m kidneyseg.viewer.lab $(RUN) $(LAB_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
