"""The grammar sandbox: what crashed or exhausted a process before the bounds existed now costs
only the sandbox's child, and the next check works (jobs/sandbox.py). The inputs here skip the
bounds of jobs/grammars.py on purpose: the sandbox is the second wall behind them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobs.registry import Registry
from jobs.sandbox import GrammarSandbox, SandboxError
from jobs.settings import Settings


@pytest.fixture(scope="module")
def sandbox() -> Iterator[GrammarSandbox]:
    box = GrammarSandbox()
    yield box
    box.close()


@pytest.fixture(scope="module")
def gguf() -> str:
    settings = Settings()
    model = Registry.load(settings.models_config).get("smollm2")
    assert model.gguf is not None
    return str(model.gguf.resolve(settings.data_dir))


def test_grammars_parse_or_say_why(sandbox: GrammarSandbox, gguf: str) -> None:
    assert sandbox.grammar_error(gguf, 'root ::= "yes" | "no"') is None
    assert "does not parse" in (sandbox.grammar_error(gguf, "root ::= (") or "")


def test_a_grammar_that_crashes_llama_cpp_costs_only_the_child(
    sandbox: GrammarSandbox, gguf: str
) -> None:
    deep = "root ::= " + "(" * 100_000 + '"a"' + ")" * 100_000  # recursion past the C stack
    with pytest.raises(SandboxError, match="crashed"):
        sandbox.grammar_error(gguf, deep)
    assert sandbox.grammar_error(gguf, 'root ::= "ok"') is None  # a new child answers


def test_a_schema_that_would_eat_the_machine_runs_out_of_the_childs_memory(
    sandbox: GrammarSandbox,
) -> None:
    with pytest.raises(SandboxError):
        sandbox.schema_to_gbnf({"type": "array", "items": {"type": "string"}, "maxItems": 10**9})
    assert "root" in sandbox.schema_to_gbnf({"type": "object"})
    with pytest.raises(ValueError):
        sandbox.schema_to_gbnf({"type": "no such type"})
