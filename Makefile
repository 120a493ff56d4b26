# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
export TEST_DATABASE_URL

# The distributions of this repository, installed editable: the gateway and its first-party
# plugins. `make run` and `make try` need these alone; `make test` adds the test extra.
PACKAGES := . $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml))
PACKAGE_FILES := setup.cfg pyproject.toml $(wildcard plugins/*/pyproject.toml)
# setuptools announces every editable install of a package beside its sources ("Editable
# installation ... be careful with folders ... with the same name"): information, not a fault.
PIP_INSTALL := PYTHONWARNINGS="ignore:Editable installation:UserWarning" \
	$(BIN)/python -m pip install --quiet

.PHONY: run test try bench install install-run test-database lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: $(BIN)/python $(PACKAGE_FILES)
	$(PIP_INSTALL) $(foreach p,$(PACKAGES),-e $(p))
	touch $@

# The client (client/) is a distribution of its own that the server never imports; the tests
# use it.
$(VENV)/.installed-test: $(VENV)/.installed-run client/pyproject.toml
	$(PIP_INSTALL) -e '.[test]' -e client
	touch $@

install-run: $(VENV)/.installed-run

# Everything: the runtime, the plugins and the test tools.
install: $(VENV)/.installed-test

run: install-run
	@scripts/run_dev.sh

try: install-run
	@scripts/try.sh

test-database: install-run
	@$(BIN)/python scripts/test_database.py

test: install test-database
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

# Benchmarks print numbers; they are not tests and do not run in CI.
bench: install
	$(BIN)/python bench/token_load.py

lint: install
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info plugins/*/*.egg-info

# The container image (authgateway:local; IMAGE=name:tag to change): docker when its daemon
# answers, else podman on a base made from Debian's packages (scripts/build_image.sh).
.PHONY: image
image:
	scripts/build_image.sh
