# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
export TEST_DATABASE_URL

.PHONY: run test try bench install lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml client/pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(BIN)/python -m pip install --quiet -e '.[test]' -e client $(foreach p,$(wildcard plugins/*/pyproject.toml),-e $(dir $(p)))
	touch $@

install: $(VENV)/.installed

run: install
	@scripts/run_dev.sh

try: install
	@scripts/try.sh

test: install
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest

# Benchmarks print numbers; they are not tests and do not run in CI.
bench: install
	$(BIN)/python bench/token_load.py

lint: install
	$(BIN)/python -m ruff check .

clean:
	rm -rf $(VENV) build *.egg-info plugins/*/*.egg-info

# The container image (authgateway:local; IMAGE=name:tag to change): docker when its daemon
# answers, else podman on a base made from Debian's packages (scripts/build_image.sh).
.PHONY: image
image:
	scripts/build_image.sh
