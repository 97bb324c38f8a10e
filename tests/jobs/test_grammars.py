"""The grammar and schema bounds (jobs/grammars.py)."""

from __future__ import annotations

from jobs.grammars import (
    MAX_GRAMMAR_DEPTH,
    MAX_SCHEMA_COUNT,
    grammar_depth,
    grammar_problem,
    schema_problem,
)


def test_depth_counts_parentheses_outside_strings_classes_and_comments() -> None:
    assert grammar_depth('root ::= ("a" ("b"))') == 2
    assert grammar_depth('root ::= "((((" [(((] # ((((\n  "x"') == 0
    assert grammar_depth('root ::= "\\"(" ("a")') == 1  # an escaped quote does not end a string
    assert grammar_depth("root ::= " + "(" * 5 + '"a"' + ")" * 5) == 5


def test_deep_or_long_grammars_are_refused() -> None:
    nested = "root ::= " + "(" * (MAX_GRAMMAR_DEPTH + 1) + '"a"' + ")" * (MAX_GRAMMAR_DEPTH + 1)
    assert "nests" in (grammar_problem(nested) or "")
    assert grammar_problem('root ::= "a"') is None
    assert "characters" in (grammar_problem('root ::= "' + "a" * 300_000 + '"') or "")


def test_schemas_that_unroll_too_far_are_refused() -> None:
    assert schema_problem({"type": "string", "maxLength": MAX_SCHEMA_COUNT}, 40) is None
    assert "maxLength" in (schema_problem({"type": "string", "maxLength": 30_000}, 40) or "")
    big_array = {"type": "array", "items": {"type": "integer"}, "maxItems": 10**9}
    assert "maxItems" in (schema_problem(big_array, 60) or "")
    assert "enum" in (schema_problem({"enum": [str(i) for i in range(100_000)]}, 10) or "")
    deep: dict = {"type": "object"}
    for _ in range(40):
        deep = {"type": "object", "properties": {"a": deep}}
    assert "levels" in (schema_problem(deep, 100) or "")
    assert "characters" in (schema_problem({}, 200_000) or "")
