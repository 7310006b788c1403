# Two commands for a fresh machine with Python 3.11: `make demo` and `make test`.
# Both create .venv if it is missing and install the project from pyproject.toml,
# constrained by requirements.lock so every install resolves to the same versions.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export LANCEDB_LOG := error

.PHONY: install synthetic system-deps demo test docs lint lock clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The optional 'synthetic' extra (synthesize-mugshots): OpenVINO, and the random-face wheel
# for its MobileStyleGAN IR files only, installed --no-deps (its declared dependencies clash
# with the pinned opencv-python-headless and pull jupyter). `make test` installs it so CI
# tests the command.
SYNTHETIC_STAMP := $(VENV)/.synthetic
RANDOM_FACE := random-face==2021.7.21.1

$(SYNTHETIC_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps $(RANDOM_FACE)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[synthetic]'
	touch $(SYNTHETIC_STAMP)

synthetic: $(SYNTHETIC_STAMP)

# Debian's Chromium renders the reviewer's report in a test. Installed when we are root (CI,
# containers); elsewhere the test skips and says how to install it.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else \
	    echo "chromium not found: the report rendering test will skip (apt-get install chromium)"; \
	  fi; }

demo: install
	$(BIN)/clip4sketch demo

test: install synthetic system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The user's guide (docs/, mkdocs.yml) as a static site in site/; --strict fails on any
# warning (a broken link or anchor between pages, a page missing from the nav). Offline: no
# plugin fetches. NO_MKDOCS_2_WARNING silences Material's end-of-life banner (not a warning).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: install
	$(BIN)/ruff check .

# Refresh the lock after changing dependencies in pyproject.toml (then commit it).
lock: install
	$(BIN)/python -m pip freeze --exclude-editable > requirements.lock

clean:
	rm -rf $(VENV) workspace .pytest_cache site
