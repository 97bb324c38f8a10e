"""Named prompt templates (configs/templates.yaml): `{variable}` placeholders filled from inputs."""

from __future__ import annotations

import string
from pathlib import Path

import yaml

from jobs.errors import InvalidRequestError, NotFoundError


class PromptTemplates:
    def __init__(self, templates: dict[str, str]):
        self._templates = templates

    @classmethod
    def load(cls, path: Path) -> PromptTemplates:
        raw = yaml.safe_load(path.read_text()) if path.exists() else {}
        return cls({str(k): str(v) for k, v in (raw or {}).get("templates", {}).items()})

    @property
    def names(self) -> list[str]:
        return sorted(self._templates)

    def variables(self, name: str) -> set[str]:
        return {f for _, f, _, _ in string.Formatter().parse(self._get(name)) if f}

    def render(self, name: str, inputs: dict[str, str]) -> str:
        missing = self.variables(name) - inputs.keys()
        if missing:
            raise InvalidRequestError(
                f"template {name!r} needs inputs {sorted(missing)}",
                param="inputs",
                code="missing_inputs",
            )
        return self._get(name).format_map(inputs)

    def _get(self, name: str) -> str:
        try:
            return self._templates[name]
        except KeyError:
            raise NotFoundError(
                f"unknown template {name!r}; known templates: {', '.join(self.names)}",
                param="template",
                code="template_not_found",
            ) from None
