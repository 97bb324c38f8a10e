"""The continuous-batching engine with the real model, in-process (no Redis, no Celery)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from jobs.errors import EngineError
from jobs.models import FinishReason, SamplingParams
from jobs.registry import Registry
from jobs.settings import ROOT, Settings
from worker.batch_engine import BatchEngine
from worker.engine import Chunk, GenerationRequest, PromptTooLongError

PROMPTS = [
    f"Write a short story about a {animal}.\n\nOnce upon a time,"
    for animal in ("cat", "dog", "fox", "owl")
]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(models_config=ROOT / "configs" / "models.yaml")


@pytest.fixture(scope="module")
def engine(settings: Settings) -> Iterator[BatchEngine]:
    model = (
        Registry.load(settings.models_config)
        .get("smollm2")
        .model_copy(update={"slots": 4, "n_ctx": 512})
    )
    eng = BatchEngine(model, settings.data_dir)
    yield eng
    eng.close()


def request(prompt: str, **sampling: object) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt, sampling=SamplingParams(**{"temperature": 0, **sampling})
    )


def run(engine: BatchEngine, req: GenerationRequest) -> list[Chunk]:
    return list(engine.submit(req))


def run_together(engine: BatchEngine, reqs: list[GenerationRequest]) -> list[list[Chunk]]:
    out: list[list[Chunk]] = [[] for _ in reqs]

    def one(i: int) -> None:
        out[i] = run(engine, reqs[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def text(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def test_greedy_output_equals_llama_cpp_pythons_high_level_api(
    engine: BatchEngine, settings: Settings
) -> None:
    from llama_cpp import Llama

    model = engine.config
    llm = Llama(
        str(model.gguf.resolve(settings.data_dir)),
        n_ctx=512,
        n_threads=model.threads,
        flash_attn=model.flash_attn,  # the same attention kernel, the same rounding
        verbose=False,
    )
    for prompt in PROMPTS[:2]:
        expected = llm.create_completion(prompt, max_tokens=24, temperature=0)
        chunks = run(engine, request(prompt, max_tokens=24))
        assert text(chunks) == expected["choices"][0]["text"]
        assert chunks[-1].completion_tokens == expected["usage"]["completion_tokens"]
        assert chunks[-1].prompt_tokens == expected["usage"]["prompt_tokens"]


def test_many_sequences_decode_together_each_with_its_own_parameters(engine: BatchEngine) -> None:
    reqs = [request(p, max_tokens=8 + 4 * i) for i, p in enumerate(PROMPTS)]
    reqs.append(
        request(PROMPTS[0], max_tokens=30, temperature=0.9, seed=7)
    )  # waits for a free slot
    results = run_together(engine, reqs)
    for i, chunks in enumerate(results[:4]):
        assert chunks[-1].finish_reason == FinishReason.LENGTH
        assert chunks[-1].completion_tokens == 8 + 4 * i
    assert results[4][-1].completion_tokens <= 30  # sampled: it may end early
    assert results[4][-1].finish_reason in (FinishReason.LENGTH, FinishReason.STOP)


def test_a_seed_makes_sampling_repeatable(engine: BatchEngine) -> None:
    # (Alone each time: batched decoding may round differently with other sequences present.)
    seeded = request(PROMPTS[0], max_tokens=30, temperature=0.9, seed=7)
    assert text(run(engine, seeded)) == text(run(engine, seeded))
    other = request(PROMPTS[0], max_tokens=30, temperature=0.9, seed=8)
    assert text(run(engine, other)) != text(run(engine, seeded))


def test_cancel_stops_one_sequence_within_a_step_and_spares_the_others(engine: BatchEngine) -> None:
    generations = [engine.submit(request(p, max_tokens=60)) for p in PROMPTS[:3]]
    results: list[list[Chunk]] = [[], [], []]

    def consume(i: int) -> None:
        for chunk in generations[i]:
            results[i].append(chunk)
            if i == 0 and chunk.completion_tokens == 5:
                generations[0].cancel()

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results[0][-1].finish_reason == FinishReason.CANCELLED
    assert results[0][-1].completion_tokens <= 6
    for chunks in results[1:]:
        assert (
            chunks[-1].finish_reason == FinishReason.LENGTH and chunks[-1].completion_tokens == 60
        )


def test_a_shared_prompt_prefix_is_evaluated_once(engine: BatchEngine) -> None:
    system = "You are a careful assistant. " * 12  # ~70 shared tokens
    reqs = [request(system + f"Question {i}: name a colour.", max_tokens=40) for i in range(4)]
    before = dict(engine.stats)
    results = run_together(engine, reqs)
    shared = engine.stats["prompt_tokens_shared"] - before["prompt_tokens_shared"]
    assert shared >= 3 * 60  # the later arrivals copied the prefix from the first
    # and a copied prefix generates exactly what an evaluated one does (each alone: no sharing)
    alone = [run(engine, req) for req in reqs]
    assert engine.stats["prompt_tokens_shared"] - before["prompt_tokens_shared"] == shared
    assert [text(r) for r in results] == [text(r) for r in alone]


def test_stop_sequences_and_the_slot_context_budget(engine: BatchEngine) -> None:
    chunks = run(engine, request("Count: 1, 2, 3, 4,", max_tokens=30, stop=[" 7"]))
    assert chunks[-1].finish_reason == FinishReason.STOP
    assert " 7" not in text(chunks) and "6" in text(chunks)
    with pytest.raises(PromptTooLongError, match="512 tokens of context"):
        run(engine, request("hello " * 400, max_tokens=200))


def test_the_engine_refuses_a_grammar_that_would_crash_llama_cpp(engine: BatchEngine) -> None:
    # 20,000 nested groups: llama.cpp's parser dies with SIGSEGV on these (jobs/grammars.py);
    # the API refuses them, and so does the worker, whatever reaches it.
    deep = "root ::= " + "(" * 20_000 + '"a"' + ")" * 20_000
    with pytest.raises(EngineError, match="nests 20000 levels"):
        run(engine, request("Say a:", max_tokens=2, grammar=deep))
    chunks = run(engine, request("Say a:", max_tokens=2, grammar='root ::= "a"'))
    assert text(chunks) == "a"  # the engine goes on serving
