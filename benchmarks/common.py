"""Pieces shared by the benchmarks: the in-process llama-cpp-python peer."""

from __future__ import annotations

from pathlib import Path

import llama_cpp

from jobs.registry import ModelConfig


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
