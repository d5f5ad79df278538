# The two commands of the README: `make run` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install run test lint browser bench package clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt -e .
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/forewarn run $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint browser
	$(BIN)/pytest $(ARGS)

# The console's browser tests drive Debian's chromium through Playwright.
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM
browser:
	@test -x $(CHROMIUM) || { \
	  echo "Installing Debian's chromium for the browser tests ..."; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; } \
	  || { echo "make test needs Debian's chromium for the browser tests and could not install it."; \
	       echo "Install it with 'sudo apt-get install chromium', or set CHROMIUM=/path/to/chromium."; exit 1; }; }

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

package: $(STAMP)
	$(BIN)/forewarn package --stage $(or $(STAGE),dev) --out build/$(or $(STAGE),dev)

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache
