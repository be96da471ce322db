# `make demo` and `make test` do all set-up on a fresh machine.
VENV    := .venv
PYTHON  := $(VENV)/bin/python
CLI     := $(VENV)/bin/gptoss-export
STAMP   := $(VENV)/.installed
DEMO    := build/demo
PLUGINS := build/plugins
# TensorRT headers for the plugin glue (never committed): `make plugins` builds libgptoss_plugins.so only
# when $(TENSORRT_ROOT)/include/NvInferRuntime.h exists; the kernels and C++ tests build regardless.
TENSORRT_ROOT ?= /opt/tensorrt-oss

.PHONY: demo test lint plugins clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test,rtx]'
	touch $(STAMP)

demo: $(STAMP)
	$(CLI) build --out $(DEMO)/engine
	$(CLI) inspect $(DEMO)/engine-checkpoint
	$(CLI) inspect $(DEMO)/engine
	$(PYTHON) -m gptoss.tools.torch_generate $(DEMO)/engine-checkpoint "Hello world" --max-new-tokens 16

plugins:
	cmake -S plugins -B $(PLUGINS) -DTENSORRT_ROOT=$(TENSORRT_ROOT) --log-level=NOTICE
	cmake --build $(PLUGINS) -j2
	ctest --test-dir $(PLUGINS) --output-on-failure

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint plugins
	$(VENV)/bin/pytest

clean:
	rm -rf build $(VENV)
