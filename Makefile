# Everything a fresh machine needs: `make demo` runs the product, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The real agent CLIs tests/agents drives through the gateway, pinned in package-lock.json.
AGENTS := node_modules/.agents-installed
# The browser tests/ui drives with Playwright: Debian's Chromium (Playwright's own download
# needs the internet). Root installs it directly; anyone else through sudo.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test typecheck bench bench-store serve agents browser

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(INSTALLED)

# npm's scripts are off and Claude Code's postinstall runs by name: newer npm skips a
# dependency's install scripts unless approved. install.cjs needs no network: it hard-links
# the native binary from the platform package npm installed (e.g. claude-code-linux-x64)
# over the bin/claude.exe stub. npm ci starts from an empty node_modules, so this is idempotent.
$(AGENTS): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	node node_modules/@anthropic-ai/claude-code/install.cjs
	node_modules/.bin/claude --version
	node_modules/.bin/codex --version
	touch $(AGENTS)

agents: $(AGENTS)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium
	$(CHROMIUM) --version

browser: $(CHROMIUM)

demo: $(INSTALLED)
	$(BIN)/ctxgate demo

test: $(INSTALLED) $(AGENTS) $(CHROMIUM)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# BENCH_ARGS=--quick for a smoke run. The LiteLLM proxy baseline gets a venv of its own
# (bench/.venv-litellm-proxy, the product's litellm version with the proxy extra), made or
# remade here whenever that version changes: litellm[proxy] never goes into .venv.
BENCH_ARGS ?=
bench: $(INSTALLED)
	$(BIN)/python -m bench.litellm_proxy
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The stores side by side (SQLite and the PostgreSQL at $CTXGATE_BENCH_POSTGRES, default the
# local server; each run makes and drops a database of its own): capture throughput, and context
# packs at 10k and 100k chunks with the planted-chunk check (about 10 minutes).
bench-store: $(INSTALLED)
	$(BIN)/python -m bench.capture --postgres $${CTXGATE_BENCH_POSTGRES:-postgresql://postgres@127.0.0.1:5432/postgres}
	$(BIN)/python -m bench.context --chunks 10000 100000 --ingest-mb 0 \
		--postgres $${CTXGATE_BENCH_POSTGRES:-postgresql://postgres@127.0.0.1:5432/postgres}

# Serves with $CTXGATE_CONFIG, else ./ctxgate.yaml if there is one, else the embedded defaults.
serve: $(INSTALLED)
	$(BIN)/ctxgate serve
