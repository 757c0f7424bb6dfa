# mmrepr — reproduce "Do Recommender Systems Really Leverage Multimodal Content?"
#   make reproduce                      the whole study on the offline demo profile
#   make reproduce PARAMS=params/allrecipes.yaml
#   make test                           the test suite
#   make lab / make report / make clean
# Both main targets create .venv (pinned, torch first) when it is missing or stale.

PARAMS ?= params/demo.yaml
STAGES ?=
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: reproduce test lab report clean env browser bench

env: $(STAMP)

# torch is installed on its own first: an unpinned resolution would pull CUDA wheels.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mmrepr)" >/dev/null
	@touch $(STAMP)

reproduce: $(STAMP)
	$(PY) -m mmrepr run $(PARAMS) $(if $(STAGES),--stages $(STAGES),)

report: $(STAMP)
	$(PY) -m mmrepr report $(PARAMS)

# Headless Chromium for the report check (Debian's package), installed when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "installing Debian's chromium for the report check"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	    echo "warning: could not install chromium; the browser test will be skipped"; }

test: $(STAMP) browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m mmrepr.bench --help

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

clean:
	rm -rf runs/ .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
