# The two commands of the quickstart. Each creates the virtual environment and installs what it
# needs by itself, so both work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
DATA_DIR ?= data
EPOCHS ?= 15
SPACE ?= search_spaces/quick_cpu.yaml
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Create .venv and install the package with its test dependencies.
install: $(STAMP)

## Main job: a real study on CIFAR-10 from $(DATA_DIR) (downloaded there if online): train the ResNet-20
## baseline the search space starts from (skipped when it exists), run the study, write its report.
run: $(STAMP)
	$(BIN)/orchestrator data check --data-dir $(DATA_DIR)
	test -f runs/resnet20-baseline.pt || $(BIN)/orchestrator train --arch resnet20 --data-dir $(DATA_DIR) \
		--epochs $(EPOCHS) --val-size 5000 --out runs/resnet20-baseline.pt
	$(BIN)/orchestrator study run $(SPACE) --data-dir $(DATA_DIR)
	$(BIN)/orchestrator report $(SPACE)

## Test suite (synthetic data; tests that need the real data directory run when DATA_DIR holds it).
test: $(STAMP)
	ORCHESTRATOR_DATA_DIR=$(abspath $(DATA_DIR)) $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py --data-dir $(DATA_DIR)

clean:
	rm -rf $(VENV) .pytest_cache
