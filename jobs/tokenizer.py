"""Count tokens and render chat prompts with a model's own tokenizer (loaded vocab_only)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from jobs.registry import ModelConfig


class Tokenizer(Protocol):
    #: token ids run from 0 to n_vocab - 1 (logit_bias is checked against it)
    n_vocab: int

    def count(self, text: str, *, special: bool) -> int: ...

    def render_chat(self, messages: list[dict[str, Any]]) -> str: ...


class LlamaTokenizer:
    """The GGUF's vocabulary and chat template, without its weights (a few MB, ~50 ms to load)."""

    def __init__(self, gguf: Path, chat_template: str | None = None):
        import llama_cpp  # the only place outside worker/ that needs it

        from jobs.llama_log import route_llama_logs

        route_llama_logs()
        self._llama = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
        self._chat_template = chat_template
        self.n_vocab = self._llama.n_vocab()

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return tokenize_prompt(self._llama, text, special=special)

    def count(self, text: str, *, special: bool) -> int:
        return len(self.tokenize(text, special=special))

    @cached_property
    def _formatter(self) -> Any:
        from llama_cpp import llama_chat_format

        template = self._chat_template or self._llama.metadata.get("tokenizer.chat_template")
        if template is None:
            return None
        vocab = self._llama._model  # noqa: SLF001 - bos/eos text is only exposed here
        return llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=self._llama.detokenize([vocab.token_eos()], special=True).decode(),
            bos_token=self._llama.detokenize([vocab.token_bos()], special=True).decode(),
        )

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        formatter = self._formatter
        if formatter is None:
            # No template in the GGUF: a plain transcript, the way llama.cpp's server falls back.
            lines = [f"{m['role']}: {m['content']}" for m in messages]
            return "\n".join(lines) + "\nassistant:"
        return str(formatter(messages=messages).prompt)


def tokenize_prompt(llama: Any, text: str, *, special: bool) -> list[int]:
    """The prompt's tokens as the worker evaluates them (API and worker must count alike).

    BOS is added when the vocabulary asks for it, unless a chat template already wrote it.
    """
    tokens: list[int] = llama.tokenize(text.encode(), add_bos=False, special=special)
    bos = llama.token_bos()
    if llama._model.add_bos_token() and (not tokens or tokens[0] != bos):  # noqa: SLF001
        tokens.insert(0, bos)
    return tokens


class FakeTokenizer:
    """Whitespace tokens, for the fake engine used in scale and fault tests."""

    n_vocab = 50_000

    def count(self, text: str, *, special: bool) -> int:
        return len(text.split()) + 1

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"


def json_schema_grammar(schema: dict[str, Any] | None) -> str:
    """GBNF for JSON matching `schema` (any JSON object when None), via llama-cpp-python."""
    import json

    from llama_cpp import llama_grammar

    if schema is None:
        return llama_grammar.JSON_GBNF
    return llama_grammar.json_schema_to_gbnf(json.dumps(schema))


def load_tokenizer(model: ModelConfig, data_dir: Path) -> Tokenizer:
    if model.engine == "fake" or model.gguf is None:
        return FakeTokenizer()
    return LlamaTokenizer(model.gguf.resolve(data_dir), model.chat_template)
