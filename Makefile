# Everything a fresh machine needs: `make demo` runs the product, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test typecheck bench serve

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/ctxgate demo

test: $(INSTALLED)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# BENCH_ARGS=--quick for a smoke run. The LiteLLM proxy baseline gets a venv of its own
# (bench/.venv-litellm-proxy, the product's litellm version with the proxy extra), made or
# remade here whenever that version changes: litellm[proxy] never goes into .venv.
BENCH_ARGS ?=
bench: $(INSTALLED)
	$(BIN)/python -m bench.litellm_proxy
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Serves with $CTXGATE_CONFIG, else ./ctxgate.yaml if there is one, else the embedded defaults.
serve: $(INSTALLED)
	$(BIN)/ctxgate serve
