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

bench: $(INSTALLED)
	$(BIN)/python -m bench.run

# Serves with $CTXGATE_CONFIG, else ./ctxgate.yaml if there is one, else the embedded defaults.
serve: $(INSTALLED)
	$(BIN)/ctxgate serve
