# Two commands for a fresh machine (README): `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build by default on this project's machines (a local wheel); see README "GPU install" for CUDA.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
DEMO_OUT ?= demo

.PHONY: setup demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/xmw demo --out $(DEMO_OUT)

test: setup
	$(BIN)/python -m pytest -q --durations=25

lint: setup
	$(BIN)/ruff check xmw_ray jobs bench tests

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
