# `make run` and `make test` each do all the set-up they need.
# TORCH picks the PyTorch wheel. The default pin resolves to the CPU build on machines whose pip
# is configured with a local CPU wheel, and to PyPI's default (CUDA) build elsewhere.
# To choose: make test TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
#            make run  TORCH="torch --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test bench lint clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -c "import torch" 2>/dev/null || $(VENV)/bin/python -m pip install -q $(TORCH)
	$(VENV)/bin/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/trl run --env CartPole-v1 --algo dqn --model gpt --name cartpole-dqn-gpt

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2  # two workers: most tests wait on processes and EnvPool

bench: $(STAMP)
	$(VENV)/bin/python -m pytest benchmarks -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
