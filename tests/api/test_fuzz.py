"""A property-based fuzz of every HTTP route in the API's own OpenAPI schema (schemathesis).

Each operation of the running API's /openapi.json (WebSocket routes are not in it) gets a fixed
number of generated requests, valid and invalid (schemathesis' positive and negative modes), as
tenant alice. No response may be a 5xx, every status must be one the schema lists (its errors
are listed as 4XX and 5XX, in each surface's error shape), and where the schema describes a
response's body, the response must match it (media type and schema). The run is deterministic
(derandomized Hypothesis, no example database), so CI repeats it, and bounded: at most
MAX_EXAMPLES per operation (about 2,100 requests in all, a minute or two on two cores).
Hypothesis also draws constants from the project's modules that are loaded, so a run of this
file alone sends other cases than a run of the whole suite; each of the two repeats itself.

What the generated requests do to the stack is kept small: the jobs they create run on the fake
model (fast), with token and choice counts lowered; path parameters are, half the time, real ids
of alice's own jobs, batches and files (so the routes are fuzzed past their 404s), and the two
things left queued on the "idle" model for the cancel routes are cancelled at the end.

The figures (cases per operation, their statuses, operations with a 5xx) are printed at the end.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ALICE_KEY, submit, wait_job

#: Generated requests per operation (positive and negative drawn together). Operations with
#: few possible requests (no parameters) get fewer: Hypothesis stops when it has tried them all.
MAX_EXAMPLES = 100
#: A request that takes longer than this is a stall and fails its case (a liveness bound, not a
#: timing figure: the slowest legitimate request, a blocking answer on the fake model, is well
#: under a second).
REQUEST_TIMEOUT_S = 30
#: Where a body names a model, it is this one: the fake engine is fast and has a worker.
FUZZ_MODEL = "fake"
#: The body field that names the model, on the operations that create jobs.
MODEL_FIELDS = {
    "POST /v1/jobs": "model",
    "POST /v1/completions": "model",
    "POST /v1/chat/completions": "model",
    "POST /v1/completion-messages": "model",
    "POST /other/completion": "model_name",
}
#: A valid core merged into half the generated bodies, so that the other fields are fuzzed past
#: the first check (generated bodies are mostly small and miss a required combination).
VALID_CORE: dict[str, dict[str, Any]] = {
    "POST /v1/jobs": {"prompt": "fuzz"},
    "POST /v1/completions": {"prompt": "fuzz"},
    "POST /v1/chat/completions": {"messages": [{"role": "user", "content": "fuzz"}]},
    "POST /v1/completion-messages": {"query": "fuzz", "inputs": {}, "user": "fuzz"},
    "POST /other/completion": {"query": "fuzz"},
    "POST /v1/files": {"purpose": "batch"},
}
#: Operations whose 200 is an event stream or a file that the schema does not describe (FastAPI
#: documents them as `application/json`, or with no content): only "no 5xx" is checked there.
UNDESCRIBED_BODIES = {
    "GET /v1/jobs/{job_id}/events",  # SSE
    "GET /v1/batches/{batch_id}/events",  # SSE
    "POST /other/completion",  # always SSE, as Chatchat answers
    "GET /v1/batches/{batch_id}/results",  # JSONL
    "GET /v1/batches/{batch_id}/errors",  # JSONL
    "GET /v1/files/{file_id}/content",  # the file's bytes
}
#: Operations that answer SSE when the body asks (`stream`, `response_mode`): the JSON answer is
#: checked against the schema, the stream (undescribed) is not.
STREAMS_ON_REQUEST = {
    "POST /v1/completions",
    "POST /v1/chat/completions",
    "POST /v1/completion-messages",
}
#: Run last: they end or remove the real things that the other operations are given.
DESTRUCTIVE = ("DELETE", "/cancel", "/stop")

cases: Counter[str] = Counter()
statuses: dict[str, Counter[int]] = {}


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ALICE_KEY}"}


@pytest.fixture(scope="module")
def real_ids(base_url: str) -> Iterator[dict[str, dict[str, list[str]]]]:
    """Alice's own ids by path parameter: `finished` ones for every operation, `queued` ones
    (on the idle model, never started) only for those that do not stream until the end."""
    with httpx.Client(base_url=base_url, headers=_auth(), timeout=60) as c:
        job = wait_job(c, submit(c, model=FUZZ_MODEL, prompt="one two", max_tokens=2)["id"])
        batch = c.post("/v1/batches", json={"model": FUZZ_MODEL, "jobs": [{"prompt": "a"}]})
        upload = c.post(
            "/v1/files", files={"file": ("in.jsonl", b"{}\n")}, data={"purpose": "batch"}
        )
        queued_job = submit(c, model="idle", prompt="wait", max_tokens=1)
        queued_batch = c.post("/v1/batches", json={"model": "idle", "jobs": [{"prompt": "a"}]})
        for response in (batch, upload, queued_batch):
            assert response.status_code in (200, 202), response.text
        finished = {
            "job_id": [job["id"]],
            "task_id": [job["id"]],
            "batch_id": [batch.json()["id"]],
            "file_id": [upload.json()["id"]],
            "model": [FUZZ_MODEL, "idle", "smollm2"],
        }
        queued = {"job_id": [queued_job["id"]], "batch_id": [queued_batch.json()["id"]]}
        yield {"finished": finished, "queued": queued}
        # Whatever the fuzz did not cancel must not wait on alice's in-flight count.
        c.post(f"/v1/jobs/{queued_job['id']}/cancel")
        c.post(f"/v1/batches/{queued_batch.json()['id']}/cancel")


@pytest.fixture(scope="module")
def api_schema(base_url: str, real_ids: dict[str, dict[str, list[str]]]) -> Any:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")

    @schema.hook
    def flatmap_path_parameters(context: Any, path_parameters: Any) -> Any:
        # Half the time, real ids in the parameters that have some (generated ones are 404s).
        if not isinstance(path_parameters, dict):
            return st.just(path_parameters)
        streams = context.operation.path.endswith("/events")
        choices = {}
        for name in path_parameters:
            ids = real_ids["finished"].get(name, [])
            if not streams:  # a queued job's stream would wait for it for ever
                ids = ids + real_ids["queued"].get(name, [])
            if ids:
                choices[name] = st.sampled_from(ids)
        if not choices:
            return st.just(path_parameters)
        real = st.fixed_dictionaries(choices).map(lambda ids: {**path_parameters, **ids})
        return st.one_of(st.just(path_parameters), real)

    @schema.hook
    def flatmap_body(context: Any, body: Any) -> Any:
        label = context.operation.label
        if not isinstance(body, dict):
            return st.just(body)
        if label in MODEL_FIELDS:
            body = _bounded({**body, MODEL_FIELDS[label]: FUZZ_MODEL})
        if label not in VALID_CORE:
            return st.just(body)
        return st.sampled_from([body, {**body, **VALID_CORE[label]}])

    @schema.hook
    def filter_body(context: Any, body: Any) -> bool:
        # The fake engine kills its worker on this marker (for the poison-job tests).
        return "[[crash]]" not in json.dumps(body, default=str)

    return schema


def _bounded(body: dict[str, Any]) -> dict[str, Any]:
    """Valid token and choice counts lowered (monotonically, so their order is kept) so that a
    case costs milliseconds on the fake model; invalid values are left for validation to refuse."""
    for name, most in (("max_tokens", 16), ("max_completion_tokens", 16), ("n", 2), ("best_of", 2)):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8192:
            body[name] = min(value, most)
    return body


def test_every_route(
    api_schema: Any, subtests: pytest.Subtests, capsys: pytest.CaptureFixture[str]
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    operations.sort(key=lambda op: any(mark in op.label for mark in DESTRUCTIVE))
    assert len(operations) >= 20, [op.label for op in operations]
    for operation in operations:
        with subtests.test(operation.label):
            _fuzz(operation, api_schema)
    with capsys.disabled():
        server_errors = {
            label: sum(n for status, n in counts.items() if status >= 500)
            for label, counts in statuses.items()
            if label != "GET /readyz" and any(status >= 500 for status in counts)
        }
        print(
            f"\nfuzz: {sum(cases.values())} cases over {len(cases)} operations; "
            f"operations with a 5xx: {len(server_errors)} {server_errors}"
        )
        for label, n in sorted(cases.items()):
            print(f"  {label}: {n} cases, statuses {dict(sorted(statuses[label].items()))}")


def _fuzz(operation: Any, schema: Any) -> None:
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    if operation.label == "POST /v1/batches":
        # Its body is read by hand (JSON, JSONL or multipart), so the schema has none: the
        # fuzz sends batches of jobs generated from POST /v1/jobs' body schema.
        jobs = schema["/v1/jobs"]["POST"]
        positive = jobs.as_strategy(GenerationMode.POSITIVE)
        job_body = st.one_of(positive, positive, jobs.as_strategy(GenerationMode.NEGATIVE))
        job_body = job_body.map(lambda case: case.body)
        job_body = job_body.filter(lambda body: not isinstance(body, bytes))  # a raw invalid body
        batch = st.fixed_dictionaries(
            {"model": st.just(FUZZ_MODEL), "jobs": st.lists(job_body, min_size=1, max_size=3)}
        )
        strategy = st.tuples(strategy, batch).map(lambda pair: _with_body(*pair))

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        _check(case)

    run()


def _with_body(case: Any, body: Any) -> Any:
    case.body = body
    case.media_type = "application/json"
    return case


def _check(case: Any) -> None:
    label = case.operation.label
    cases[label] += 1
    response = case.call(headers=_auth(), timeout=REQUEST_TIMEOUT_S)
    statuses.setdefault(label, Counter())[response.status_code] += 1
    if label == "GET /readyz" and response.status_code == 503:
        # The readiness probe's 503 is its answer, not an error: the test stack configures a
        # model with no worker ("idle") on purpose.
        assert response.json()["models_without_worker"] == ["idle"], response.text
        return
    checks = [not_a_server_error, status_code_conformance]
    content_type = response.headers.get("content-type", [""])[0]
    streamed = label in STREAMS_ON_REQUEST and content_type.startswith("text/event-stream")
    if label not in UNDESCRIBED_BODIES and not streamed:
        checks += [response_schema_conformance, content_type_conformance]
    case.validate_response(response, checks=checks)
