# protonet: `make install` sets up .venv, `make lenet` trains LeNet on the bundled MNIST digits,
# `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install data lenet test test-fast test-distributed proto bench bench-nets lint clean fuzz

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Reinstall only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[test,mpi]"
	touch $@

install: $(VENV)/.installed

data: install
	$(PY) tools/fetch_mnist.py

lenet: data
	$(VENV)/bin/protonet train --solver models/lenet/lenet_solver.prototxt

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

test-distributed: install
	$(PY) -m pytest tests/distributed -q

proto: $(PY)
	PYTHON=$(PY) bash tools/gen_proto.sh

fuzz: data
	$(PY) tools/fuzz.py --cases 10000
	PROTONET_KILLS=100 $(PY) -m pytest -q -s tests/hardening/test_killed_runs.py

bench: install
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) bench/run.py

bench-nets: install
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) bench/run.py --nets

lint: $(PY)
	$(PIP) install --quiet ruff
	$(VENV)/bin/ruff check protonet tests tools

clean:
	rm -rf $(VENV) build *.egg-info
