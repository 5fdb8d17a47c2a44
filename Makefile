# The two commands of the quickstart. Each creates the virtual environment and installs what it
# needs by itself, so both work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
DATA_DIR ?= data
EPOCHS ?= 15
ARCH ?= resnet20
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Create .venv and install the package with its test dependencies.
install: $(STAMP)

## Main job: train and evaluate a baseline on CIFAR-10 from $(DATA_DIR) (downloaded there if online).
run: $(STAMP)
	$(BIN)/orchestrator data check --data-dir $(DATA_DIR)
	$(BIN)/orchestrator train --arch $(ARCH) --data-dir $(DATA_DIR) --epochs $(EPOCHS) --out runs/$(ARCH)-baseline.pt
	$(BIN)/orchestrator eval runs/$(ARCH)-baseline.pt --data-dir $(DATA_DIR)

## Test suite (synthetic data; tests that need the real data directory run when DATA_DIR holds it).
test: $(STAMP)
	ORCHESTRATOR_DATA_DIR=$(abspath $(DATA_DIR)) $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py --data-dir $(DATA_DIR)

clean:
	rm -rf $(VENV) .pytest_cache
