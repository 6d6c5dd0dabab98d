# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
# `make docs` builds the API reference into docs/_build/html (warnings are errors).
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: demo test test-fast bench docs clean

$(BIN)/python:
	py=$$(tools/find-python.sh) && "$$py" -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# the docs extra (Sphinx) on top of the test install; reinstalled when pyproject.toml changes
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	touch $(DOCS_STAMP)

demo: $(STAMP)
	$(BIN)/pp-diffusion demo

# one pytest worker per core, each test file on one worker (its module fixtures and compiled runs
# are shared within the file): the suite is compile-bound, and XLA compiles on one thread
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile --durations=40

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile -m "not slow"

# -E: a fresh build every time, so that the docstrings are read again and every warning is shown
# (an incremental build would skip unchanged pages and their warnings); -W --keep-going: all of
# them are listed, then the build fails.
docs: $(DOCS_STAMP)
	$(BIN)/python -m sphinx -E -W --keep-going -q -b html docs docs/_build/html
	@echo "API reference: docs/_build/html/index.html"

bench: $(STAMP)
	$(BIN)/python benchmarks/integrators.py

clean:
	rm -rf $(VENV) build *.egg-info docs/_build
