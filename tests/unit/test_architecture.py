"""The dependency rule: api -> jobs <- worker. api/ never imports worker/ or llama_cpp."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_api_imports_neither_worker_nor_llama_cpp() -> None:
    offenders = {
        f: n & {"worker", "llama_cpp"}
        for f, n in imported_modules("api").items()
        if n & {"worker", "llama_cpp"}
    }
    assert offenders == {}


def test_jobs_imports_neither_api_nor_worker() -> None:
    offenders = {
        f: n & {"api", "worker"}
        for f, n in imported_modules("jobs").items()
        if n & {"api", "worker"}
    }
    assert offenders == {}


def test_worker_never_imports_api() -> None:
    offenders = {f: n & {"api"} for f, n in imported_modules("worker").items() if "api" in n}
    assert offenders == {}


def test_redis_keys_are_built_only_in_jobs_keys() -> None:
    for package in ("api", "worker", "jobs", "cli"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "keys.py":
                continue
            assert 'f"tokenq:' not in path.read_text(), (
                f"{path} builds a Redis key outside jobs/keys.py"
            )
