# `make demo` and `make test` do all set-up on a fresh machine.
VENV    := .venv
PYTHON  := $(VENV)/bin/python
CLI     := $(VENV)/bin/gptoss-export
STAMP   := $(VENV)/.installed
DEMO    := build/demo

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(CLI) build --out $(DEMO)/engine
	$(CLI) inspect $(DEMO)/engine-checkpoint
	$(CLI) inspect $(DEMO)/engine
	$(PYTHON) -m gptoss.tools.torch_generate $(DEMO)/engine-checkpoint "Hello world" --max-new-tokens 16

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/pytest

clean:
	rm -rf build $(VENV)
