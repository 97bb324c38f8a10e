"""Bounds on grammars and JSON schemas, checked before llama.cpp sees them.

llama.cpp's GBNF parser recurses once per nesting level with no limit of its own: a grammar
nested about 20,000 deep (40 KB of parentheses) kills the process that parses it with SIGSEGV,
and so does the grammar llama-cpp-python's converter makes from `{"type": "string",
"maxLength": 30000}` (each optional repetition is one more level). Measured on this machine:
5,000 levels parse, 20,000 crash; maxLength/maxItems of 1,000 convert to grammars that parse,
2,000 to grammars llama.cpp rejects, 30,000 crash. The bounds below sit well inside what parses.

The API checks every request with these (JobService.build_job), and the worker checks again before
it builds a sampler, so nothing the API would refuse reaches llama.cpp either way.
"""

from __future__ import annotations

from typing import Any

#: Longest GBNF text, given or converted from a schema (characters).
MAX_GRAMMAR_CHARS = 200_000
#: Deepest nesting of parentheses in a GBNF grammar.
MAX_GRAMMAR_DEPTH = 1_000
#: Longest JSON schema, as JSON text (characters).
MAX_SCHEMA_CHARS = 100_000
#: Deepest nesting of a JSON schema (objects and lists).
MAX_SCHEMA_DEPTH = 32
#: Largest repetition count a schema may ask for (maxLength, maxItems, ...), and longest enum.
MAX_SCHEMA_COUNT = 1_000
#: Most values (objects, lists, scalars) in one schema.
MAX_SCHEMA_NODES = 10_000

#: Schema keywords whose value is a repetition count the converter unrolls.
_COUNTS = ("maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties")


def grammar_depth(gbnf: str) -> int:
    """The deepest nesting of `(` in a GBNF text, outside strings, character classes and
    comments."""
    depth = deepest = 0
    i, n = 0, len(gbnf)
    while i < n:
        c = gbnf[i]
        if c in '"[':
            close = '"' if c == '"' else "]"
            i += 1
            while i < n and gbnf[i] != close:
                i += 2 if gbnf[i] == "\\" else 1
        elif c == "#":
            while i < n and gbnf[i] != "\n":
                i += 1
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
        i += 1
    return deepest


def grammar_problem(gbnf: str) -> str | None:
    """Why this grammar is refused before llama.cpp parses it (None: within bounds)."""
    if len(gbnf) > MAX_GRAMMAR_CHARS:
        return f"the grammar is {len(gbnf)} characters; the limit is {MAX_GRAMMAR_CHARS}"
    if (depth := grammar_depth(gbnf)) > MAX_GRAMMAR_DEPTH:
        return f"the grammar nests {depth} levels deep; the limit is {MAX_GRAMMAR_DEPTH}"
    return None


def schema_problem(schema: Any, schema_chars: int) -> str | None:
    """Why this JSON schema is refused before it is converted (None: within bounds)."""
    if schema_chars > MAX_SCHEMA_CHARS:
        return f"json_schema is {schema_chars} characters as JSON; the limit is {MAX_SCHEMA_CHARS}"
    nodes = 0
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            return f"json_schema has more than {MAX_SCHEMA_NODES} values"
        if depth > MAX_SCHEMA_DEPTH:
            return f"json_schema nests more than {MAX_SCHEMA_DEPTH} levels deep"
        if isinstance(value, dict):
            for key in _COUNTS:
                count = value.get(key)
                if isinstance(count, int | float) and count > MAX_SCHEMA_COUNT:
                    return f"json_schema {key} is {count}; the limit is {MAX_SCHEMA_COUNT}"
            for key in ("enum", "anyOf", "oneOf", "allOf", "prefixItems"):
                items = value.get(key)
                if isinstance(items, list) and len(items) > MAX_SCHEMA_COUNT:
                    return (
                        f"json_schema {key} has {len(items)} items; the limit is {MAX_SCHEMA_COUNT}"
                    )
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return None
