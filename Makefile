# One command each for the demo and the tests, on a fresh machine.
#   make demo   build a venv, then generate, train, evaluate and compare a 4-run study of a tiny model on CPU
#   make test   build a venv, install a local SLURM (apt, as root), run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test clean

$(BIN)/torchtune-config-writer: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel; an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/torchtune-config-writer

demo: setup
	$(BIN)/torchtune-config-writer demo --workdir demo_outputs

test: setup
	.ci/install_slurm.sh
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo_outputs outputs .pytest_cache
