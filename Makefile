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

# Two test processes (pytest-xdist; a module's tests stay in one process so its fixtures are built once): most
# tests wait on Ray, subprocesses or I/O, so two run side by side even on 2 cores. PYTEST_WORKERS=0 runs serially.
# Modules go out in collection order, where tests/conftest.py puts the slow ones first (xdist's default order,
# most tests first, would start the one-test, minutes-long modules last).
PYTEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

lint: setup
	$(BIN)/ruff check xmw_ray jobs bench tests

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
