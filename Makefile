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
	@command -v nvcc >/dev/null && $(MAKE) --no-print-directory plugins || echo "nvcc not found: skipping the CUDA plugins"
	$(CLI) build --out $(DEMO)/engine
	$(CLI) inspect $(DEMO)/engine-checkpoint
	$(CLI) inspect $(DEMO)/engine
	$(CLI) generate $(DEMO)/engine -p "Hello world" -p "GPT-OSS is" --max-new-tokens 16
	$(CLI) generate $(DEMO)/engine-checkpoint --backend torch -p "Hello world" --max-new-tokens 16
	$(CLI) compare $(DEMO)/engine --reference $(DEMO)/engine-checkpoint --hf --json $(DEMO)/compare.json
	@if [ -f $(PLUGINS)/libgptoss_plugins.so ]; then \
		$(CLI) build $(DEMO)/engine-checkpoint --out $(DEMO)/engine-rtx --target tensorrt-rtx \
			--compute-capability sm89 --max-seq-len 1024 && $(CLI) inspect $(DEMO)/engine-rtx; \
	else echo "$(PLUGINS)/libgptoss_plugins.so not built (TensorRT headers not found): skipping the TensorRT-RTX engine"; fi

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
