# The two set-up commands of the README: `make app` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501

.PHONY: app test test-fast lint params bench clean

$(VENV)/.app-installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.app-installed requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

## make app: create .venv, install, start the app on the shipped checkpoints at http://localhost:8501
app: $(VENV)/.app-installed
	$(VENV)/bin/streamlit run app/streamlit_app.py --server.port $(PORT) --server.headless true

## make test: create/update .venv, install Chromium and nginx if it can, run the whole suite (slow, browser, load)
test: $(VENV)/.dev-installed
	bash scripts/ensure_test_tools.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -m "" -q

## make test-fast: the quick default subset (no slow/browser/load tests)
test-fast: $(VENV)/.dev-installed
	$(VENV)/bin/pytest -q

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .

params: $(VENV)/.app-installed
	$(VENV)/bin/attnviz params

bench: $(VENV)/.dev-installed
	for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-output
