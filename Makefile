# The two commands of the README: `make run` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install run test lint bench package clean

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

test: lint
	$(BIN)/pytest $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

package: $(STAMP)
	$(BIN)/forewarn package --stage $(or $(STAGE),dev) --out build/$(or $(STAGE),dev)

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache
