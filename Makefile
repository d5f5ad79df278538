# The two commands of the README: `make run` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install run test lint browser bench wheelhouse package deploy clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt -e .
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/forewarn run $(ARGS)

# checkov pins its own boto3 (and more), which the service's cannot share: it lives in a venv
# of its own, inside .venv so that `make clean` takes it too. cfn-lint is in requirements-dev.txt.
CHECKOV_VENV := $(VENV)/checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
$(CHECKOV_VENV)/.installed: requirements-checkov.txt $(STAMP)
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-checkov.txt
	touch $@

# The infra template alone here; tests/test_package.py lints the merged one it builds.
# Both tools work offline (checkov with --skip-download and no update check).
lint: $(STAMP) $(CHECKOV_VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/cfn-lint infra/forewarn.json
	CKV_SKIP_PACKAGE_UPDATE_CHECK=true $(CHECKOV) --quiet --compact --skip-download --framework cloudformation -f infra/forewarn.json

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

# `make package` builds build/$(STAGE)/deployment.zip and sam.json with no network: the
# dependencies come from wheelhouse/, which `make wheelhouse` fills from PyPI for Lambda's
# runtime and architecture when it is missing or requirements.txt has changed (see
# docs/DEPLOY.md).
STAGE ?= dev

wheelhouse: $(STAMP)
	$(BIN)/forewarn package --stage $(STAGE) --wheelhouse-only

package: wheelhouse
	$(BIN)/forewarn package --stage $(STAGE) --out build/$(STAGE)

# `make deploy STAGE=prod DEPLOY_BUCKET=<S3 bucket for the code>`: package, upload, and create
# or update the CloudFormation stack. It checks the bucket, the AWS CLI and the credentials
# before building anything. DEPLOY_PARAMS adds parameter overrides ("OpsEmail=ops@...").
AWS ?= aws
DEPLOY_BUCKET ?=
STACK_NAME ?= forewarn-$(STAGE)
DEPLOY_PARAMS ?=
# The SES identity the stack creates is the stage's SENDER_EMAIL in .chalice/config.json, the
# address the functions send from (not the environment's SENDER_EMAIL, which local runs set).
STAGE_SENDER_EMAIL = $(shell $(PYTHON) -c 'import json; c = json.load(open(".chalice/config.json")); print({**c.get("environment_variables", {}), **c["stages"].get("$(STAGE)", {}).get("environment_variables", {})}.get("SENDER_EMAIL", ""))')

deploy:
	@test -n "$(DEPLOY_BUCKET)" || { echo "make deploy needs DEPLOY_BUCKET, an S3 bucket in the stack's region for the code: make deploy STAGE=$(STAGE) DEPLOY_BUCKET=my-artifacts (see docs/DEPLOY.md)"; exit 1; }
	@command -v $(AWS) >/dev/null || { echo "make deploy needs the AWS CLI ('$(AWS)' is not on PATH): see docs/DEPLOY.md"; exit 1; }
	@$(AWS) sts get-caller-identity --output text >/dev/null || { echo "make deploy needs AWS credentials: 'aws sts get-caller-identity' failed (aws configure, AWS_PROFILE, or aws sso login)"; exit 1; }
	$(MAKE) package STAGE=$(STAGE)
	$(AWS) cloudformation package --template-file build/$(STAGE)/sam.json --s3-bucket $(DEPLOY_BUCKET) --s3-prefix forewarn/$(STAGE) --use-json --output-template-file build/$(STAGE)/packaged.json
	$(AWS) cloudformation deploy --template-file build/$(STAGE)/packaged.json --stack-name $(STACK_NAME) --s3-bucket $(DEPLOY_BUCKET) --s3-prefix forewarn/$(STAGE) --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND --parameter-overrides $(strip Stage=$(STAGE) SenderEmail=$(STAGE_SENDER_EMAIL) $(DEPLOY_PARAMS)) --no-fail-on-empty-changeset
	$(AWS) cloudformation describe-stacks --stack-name $(STACK_NAME) --query 'Stacks[0].Outputs' --output table

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache
