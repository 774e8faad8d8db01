# Sabot: `make demo` runs the example worker, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.sabot-installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast test-pure bench build install clean wasm-example docs

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel

# Install with the test extra and compile the Cython extensions in place.
$(STAMP): $(VENV)/bin/python pyproject.toml setup.py
	$(PIP) install --quiet "Cython>=3.0" setuptools wheel
	$(PIP) install --quiet --no-build-isolation -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Rebuild the extensions whenever a .pyx changed.
build: $(STAMP)
	$(PY) setup.py --quiet build_ext --inplace

demo: build
	$(PY) examples/wordcount.py worker -l info

# The whole suite twice: Cython fast path, then the pure-Python twins.
test: build
	$(PY) -m pytest -q $(PYTEST_ARGS)
	SABOT_PURE_PYTHON=1 $(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: build
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-pure: build
	SABOT_PURE_PYTHON=1 $(PY) -m pytest -q $(PYTEST_ARGS)

bench: build
	@set -e; for script in benchmarks/bench_*.py; do \
		echo "=== $$script"; $(PY) $$script; done

# The documentation site (mkdocs.yml) into build/site/; any warning fails the build.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

# The example WASM node in C (examples/wasm_node): clang and lld (wasm-ld),
# Debian's clang and lld packages. No libc: the ABI needs none.
WASM_CC ?= clang
WASM_CFLAGS ?= --target=wasm32 -O2 -nostdlib -Wl,--no-entry
WASM_EXAMPLE := examples/wasm_node/sum.wasm

wasm-example: $(WASM_EXAMPLE)

$(WASM_EXAMPLE): examples/wasm_node/sum.c examples/wasm_node/sabot_node.h
	$(WASM_CC) $(WASM_CFLAGS) -o $@ examples/wasm_node/sum.c

clean:
	rm -rf build dist *.egg-info sabot/_cython/*.c sabot/_cython/*.so sabot/_cython/*.html
	rm -f $(WASM_EXAMPLE)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
