"""The dependency rules of docs/architecture.md, checked on the source.

- api -> jobs <- worker: api/ never imports worker/ or llama_cpp; jobs/ imports neither.
- Each API surface is one folder of api/ (openai, dify, chatchat, ws_chat); no surface imports
  another or native/; native/ imports only OpenAI's Batch API pieces (they share /v1/batches and
  /v1/files). Only api/app.py imports router modules; only app.py and deps.py touch `app.state`.
- Redis key names are built in jobs/keys.py only.
- Every error raised by api/, jobs/ or worker/ is a jobs.errors.TokenqError, drawn in that
  module's docstring.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from jobs import errors

ROOT = Path(__file__).resolve().parents[1]
SURFACES = ("openai", "dify", "chatchat", "ws_chat")
#: What native/ may import of a surface: OpenAI's Batch API file formats and wire models.
NATIVE_MAY_IMPORT = {"api.openai.batches", "api.openai.protocol"}
PACKAGES = ("api", "jobs", "worker", "cli", "tokenq", "benchmarks")


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, by full dotted name (`from a import b` gives a and a.b)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def top_level(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def defines_router(path: Path) -> bool:
    """A router module: one that assigns a module-level `router`."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "router" for t in targets):
                return True
    return False


def surface_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) > 1 and parts[0] == "api" and parts[1] in (*SURFACES, "native"):
        return parts[1]
    return None


def test_api_imports_neither_worker_nor_llama_cpp() -> None:
    offenders = {
        str(p): top_level(imports_of(p)) & {"worker", "llama_cpp"}
        for p in sources("api")
        if top_level(imports_of(p)) & {"worker", "llama_cpp"}
    }
    assert offenders == {}


def test_jobs_imports_neither_api_nor_worker() -> None:
    offenders = {
        str(p): top_level(imports_of(p)) & {"api", "worker"}
        for p in sources("jobs")
        if top_level(imports_of(p)) & {"api", "worker"}
    }
    assert offenders == {}


def test_worker_never_imports_api() -> None:
    offenders = [str(p) for p in sources("worker") if "api" in top_level(imports_of(p))]
    assert offenders == []


def native_may_import(name: str) -> bool:
    # `from api.openai import batches` names the package as well as the module.
    return name in {f"api.{s}" for s in SURFACES} or any(
        name == allowed or name.startswith(f"{allowed}.") for allowed in NATIVE_MAY_IMPORT
    )


def test_no_surface_imports_another_surface() -> None:
    offenders = {}
    for path in sources("api"):
        own = surface_of(module_name(path))
        if own is None:
            continue
        foreign = {
            name
            for name in imports_of(path)
            if surface_of(name) not in (None, own)
            and not (own == "native" and native_may_import(name))
        }
        if foreign:
            offenders[module_name(path)] = sorted(foreign)
    assert offenders == {}
    # The check sees a violation when there is one.
    assert surface_of("api.dify.serving") == "dify" and not native_may_import("api.dify.router")


def test_only_the_app_imports_routers() -> None:
    routers = {module_name(p) for p in sources("api") if defines_router(p)}
    assert {"api.native.jobs", "api.openai.router", "api.dify.router"} <= routers
    offenders = {
        module_name(p): sorted(imports_of(p) & routers)
        for p in sources("api")
        if module_name(p) != "api.app" and imports_of(p) & routers
    }
    assert offenders == {}


def test_app_state_is_read_only_by_the_app_and_deps() -> None:
    allowed = {"api.app", "api.deps"}
    offenders = [
        module_name(p)
        for p in sources("api")
        if module_name(p) not in allowed
        and re.search(r"\.app\.state\b|\bapp\.state\b", p.read_text())
    ]
    assert offenders == []


#: A Redis key or channel name: "tokenq:" followed by a key segment (not prose like "tokenq: a").
REDIS_KEY = re.compile(r"tokenq[:.][A-Za-z_{]")


def string_parts(path: Path) -> list[tuple[int, str]]:
    """Every string constant in a file (f-strings' literal parts included), with its line."""
    return [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_redis_keys_are_built_only_in_jobs_keys(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in sources(package)
        if path != ROOT / "jobs" / "keys.py"
        for line, text in string_parts(path)
        if REDIS_KEY.match(text) and not text.startswith("tokenq.")  # module paths are fine
    ]
    assert offenders == []


def test_the_key_check_would_catch_a_key() -> None:
    tree = 'KEY = "tokenq:job:"\nCHAN = f"tokenq:chan:{x}"\nHELP = "tokenq: a service"\n'
    found = [
        node.value
        for node in ast.walk(ast.parse(tree))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    assert [text for text in found if REDIS_KEY.match(text)] == ["tokenq:job:", "tokenq:chan:"]


def defined_exceptions() -> list[type[BaseException]]:
    found = []
    for package in ("api", "jobs", "worker"):
        for path in sources(package):
            if "class " not in path.read_text():
                continue
            module = importlib.import_module(module_name(path))
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                    found.append(cls)
    return found


def test_every_error_is_a_tokenq_error() -> None:
    exceptions = defined_exceptions()
    assert errors.EngineError in exceptions  # the scan reaches jobs/
    outside = [
        f"{c.__module__}.{c.__name__}" for c in exceptions if not issubclass(c, errors.TokenqError)
    ]
    assert outside == []


def test_the_error_tree_is_drawn_whole() -> None:
    subclasses = {c for c in defined_exceptions() if issubclass(c, errors.TokenqError)}
    doc = errors.__doc__ or ""
    assert errors.UnknownModelError in subclasses
    missing = sorted(
        c.__name__ for c in subclasses if not re.search(rf"\b{c.__name__}\s+{c.status_code}\b", doc)
    )
    assert missing == [], "drawn in jobs/errors.py's docstring with its status"
