"""Pieces shared by the benchmarks: the peers tokenq is measured against (llama-cpp-python in
process; llama.cpp's own llama-server and llama-batched-bench, built from the same sources)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import llama_cpp

from jobs.registry import ModelConfig
from jobs.settings import ROOT

LLAMA_CPP_PYTHON = "0.3.36"  # the release we run: its sdist vendors the llama.cpp we link
BUILD_ROOT = ROOT / "var" / "llama-server"
LLAMA_SRC = BUILD_ROOT / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
TOOLS = ("llama-server", "llama-batched-bench")
# The Makefile's CMAKE_ARGS: an explicit instruction set (AVX512 only where the CPU has it).
CMAKE_FLAGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
)
AVX512_FLAGS = "-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON"


def load_llama(model: ModelConfig, data_dir: Path) -> llama_cpp.Llama:
    """llama-cpp-python's high-level Llama with the model's own settings (one sequence)."""
    assert model.gguf is not None
    return llama_cpp.Llama(
        model_path=str(model.gguf.resolve(data_dir)),
        n_ctx=model.n_ctx,
        n_batch=model.n_batch,
        n_gpu_layers=model.n_gpu_layers,
        n_threads=model.threads,
        n_threads_batch=model.threads,
        flash_attn=model.flash_attn,
        verbose=False,
    )


def ensure_llama_tools() -> Path:
    """llama-server and llama-batched-bench from llama-cpp-python's sdist, built when missing."""
    bindir = LLAMA_SRC / "build" / "bin"
    if all((bindir / tool).exists() for tool in TOOLS):
        return bindir
    print(f"building {' and '.join(TOOLS)} from llama-cpp-python {LLAMA_CPP_PYTHON}'s sdist (about 10 minutes on 2 cores)...", flush=True)  # fmt: skip
    if not (LLAMA_SRC / "CMakeLists.txt").exists():
        sdist = BUILD_ROOT / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
        if not sdist.exists():
            pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            spec = f"llama-cpp-python=={LLAMA_CPP_PYTHON}"
            subprocess.run([*pip, spec, "-d", str(BUILD_ROOT)], check=True, timeout=600)
        with tarfile.open(sdist) as tar:
            tar.extractall(BUILD_ROOT, filter="data")
    flags = CMAKE_FLAGS.split()
    if "avx512f" in Path("/proc/cpuinfo").read_text().split():
        flags += AVX512_FLAGS.split()
    flags += ["-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DBUILD_SHARED_LIBS=OFF"]
    configure = ["cmake", "-S", ".", "-B", "build", "-DCMAKE_BUILD_TYPE=Release", *flags]
    subprocess.run(configure, cwd=LLAMA_SRC, check=True, timeout=600)
    build = ["cmake", "--build", "build", "-j2", "--target", *TOOLS]
    subprocess.run(build, cwd=LLAMA_SRC, check=True, timeout=3600)
    return bindir


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a process started with start_new_session=True, and its children."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
