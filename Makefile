# `make demo` and `make test` do all set-up on a fresh machine.
VENV    := .venv
PYTHON  := $(VENV)/bin/python
CLI     := $(VENV)/bin/gptoss-export
STAMP   := $(VENV)/.installed
DEMO    := build/demo
PLUGINS := build/plugins
# TensorRT headers for the plugin glue (never committed): libgptoss_plugins.so is built only when they are found;
# the kernels and C++ tests build regardless. TENSORRT_ROOT names a TensorRT or TensorRT-RTX SDK (or any folder with
# include/NvInferRuntime.h); unset, `make plugins` uses build/tensorrt-oss or /opt/tensorrt-oss, and first tries to
# fetch the open-source headers of a pinned TensorRT release into build/tensorrt-oss (`make tensorrt-headers`).
TENSORRT_ROOT    ?=
TENSORRT_TAG     := v11.1
TENSORRT_HEADERS := build/tensorrt-oss
TENSORRT_URL     := https://github.com/NVIDIA/TensorRT/archive/refs/tags/$(TENSORRT_TAG).tar.gz
FIND_TENSORRT    := for d in "$(TENSORRT_ROOT)" "$(CURDIR)/$(TENSORRT_HEADERS)" /opt/tensorrt-oss; do \
                    [ -n "$$d" ] && [ -f "$$d/include/NvInferRuntime.h" ] && echo "$$d" && break; done

.PHONY: demo test lint plugins cpu-kernels tensorrt-headers test-kernels-asan gpu-check clean

# PyTriton (serve --triton) pins numpy<2 for its Triton Python-backend stub, but only that stub needs numpy 1: PyTriton
# goes in without its requirements (the `triton` extra lists the others), so numpy stays 2 here, and the stub's own
# numpy-1 environment is made now (`stub_env` in serve/triton.py) rather than at the first `serve --triton`.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test,rtx,serve,triton]'
	$(PYTHON) -m pip install --quiet --no-deps nvidia-pytriton==0.7.0
	$(PYTHON) -c 'from gptoss.serve.triton import stub_env; stub_env()'
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

tensorrt-headers:
	@if [ -n "$$($(FIND_TENSORRT))" ]; then echo "TensorRT headers: $$($(FIND_TENSORRT))/include"; \
	elif mkdir -p $(TENSORRT_HEADERS).partial && curl -fsL --connect-timeout 10 --max-time 120 $(TENSORRT_URL) \
		| tar -xz -C $(TENSORRT_HEADERS).partial --strip-components=1 --wildcards --no-wildcards-match-slash '*/include/*' 2>/dev/null; then \
		rm -rf $(TENSORRT_HEADERS) && mv $(TENSORRT_HEADERS).partial $(TENSORRT_HEADERS) && \
		echo "TensorRT headers $(TENSORRT_TAG): $(TENSORRT_HEADERS)/include"; \
	else rm -rf $(TENSORRT_HEADERS).partial; \
		echo "cannot download the TensorRT $(TENSORRT_TAG) headers: run 'git clone --depth 1 -b $(TENSORRT_TAG) https://github.com/NVIDIA/TensorRT && make plugins TENSORRT_ROOT=TensorRT' where the network allows, or set TENSORRT_ROOT to a TensorRT or TensorRT-RTX SDK"; fi

plugins: tensorrt-headers
	cmake -S plugins -B $(PLUGINS) -DTENSORRT_ROOT="$$($(FIND_TENSORRT))" --log-level=NOTICE
	cmake --build $(PLUGINS) -j2
	ctest --test-dir $(PLUGINS) --output-on-failure

# Native CPU kernels (plugins/cpu): only the system C++ compiler, no CUDA.
cpu-kernels:
	cmake -S plugins/cpu -B build/cpu --log-level=NOTICE
	cmake --build build/cpu -j2
	ctest --test-dir build/cpu --output-on-failure

# The kernels' CPU tests (tests/test_kernels.py) with the host kernels built under AddressSanitizer, which is
# preloaded into Python; --capture=sys lets its report reach the terminal. Not part of `make test` (minutes).
test-kernels-asan: $(STAMP)
	cmake -S plugins -B build/plugins-asan -DGPTOSS_HOST_ASAN=ON --log-level=NOTICE
	cmake --build build/plugins-asan -j2 --target gptoss_kernels_host gptoss_host_runtime_tests
	build/plugins-asan/host/gptoss_host_runtime_tests
	GPTOSS_KERNELS_HOST_LIB=build/plugins-asan/libgptoss_kernels_host.so ASAN_OPTIONS=detect_leaks=0 \
		LD_PRELOAD=$$($(CXX) -print-file-name=libasan.so) $(VENV)/bin/pytest --capture=sys tests/test_kernels.py

# For a GPU machine with a driver, nvcc, cmake, a CUDA build of torch and transformers, and no network: runs the
# repository's own folders as the `gptoss` package with that Python (no virtual environment, nothing installed).
GPU_PYTHON ?= python3
GPU_CHECK  := build/gpu-check
gpu-check:
	@mkdir -p $(GPU_CHECK)/python/gptoss && for p in exporter runtime tools; do \
		ln -sfn $(CURDIR)/$$p $(GPU_CHECK)/python/gptoss/$$p; done
	PYTHONPATH=$(CURDIR)/$(GPU_CHECK)/python $(GPU_PYTHON) -m gptoss.tools.gpu_check --out $(GPU_CHECK)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint plugins cpu-kernels
	$(VENV)/bin/pytest

clean:
	rm -rf build $(VENV)
