"""Stateful schemathesis fuzzing along the OpenAPI links, in-process against the memory broker.

Each scenario is a chain of calls where a response's `task_id` or `grant_id` feeds the next call
(open a task → request grants on it → read, issue, revoke, acknowledge → heartbeat, complete).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test
from schemathesis import Case, HookContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.openapi import from_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.unit.api.test_openapi_fuzz import BROKER, HEADERS, without_lifespan

from jitbroker.app import create_app

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SCENARIOS = 80
STEPS = 10
GRANT_PATH = "/v1/tasks/{task_id}/grants"
# Random profile names are all unknown (404); these reach issuing (201) and approval (202).
REAL_GRANT_REQUESTS = [
    {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 60, "justification": "fuzz"},
    {"profile": "demo-db", "scopes": ["write"], "ttl_seconds": 60, "justification": "fuzz"},
]

schema = from_asgi("/openapi.json", without_lifespan(create_app(broker=BROKER))).include(
    path_regex="^/v1/(tasks|grants)"
)


@schema.hook
def flatmap_body(context: HookContext, body: Any) -> st.SearchStrategy[Any]:
    """Half of the grant requests name a real profile, so workflows get past the 404."""
    if context.operation is not None and context.operation.path == GRANT_PATH:
        return st.one_of(st.just(body), st.sampled_from(REAL_GRANT_REQUESTS))
    return st.just(body)


class Workflow(schema.as_state_machine()):  # type: ignore[misc]
    def setup(self) -> None:
        # Each scenario starts from an empty broker, so the same calls get the same answers.
        BROKER.redis.flushall()

    def get_call_kwargs(self, case: Case) -> dict[str, Any]:
        return {"headers": HEADERS}

    def validate_response(self, response: Response, case: Case, **kwargs: Any) -> None:
        case.validate_response(response, checks=CHECKS)


def test_workflows_along_links_have_no_server_errors() -> None:
    """Pass: chains of calls following the links never answer 5xx, and every response body
    matches the schema documented for its status code."""
    run_state_machine_as_test(
        Workflow,
        settings=settings(
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        ),
    )


def test_spec_links_tasks_to_grants_and_grants_onwards() -> None:
    """Pass: a created task's `task_id` links to requesting grants on it, and a grant request's
    `grant_id` (issued or pending) links to reading and issuing it."""
    spec = create_app(broker=BROKER).openapi()
    opened = spec["paths"]["/v1/tasks"]["post"]["responses"]["201"]["links"]
    grant_op = spec["paths"][GRANT_PATH]["post"]
    assert opened[grant_op["operationId"]]["parameters"] == {"task_id": "$response.body#/task_id"}
    for status in ("201", "202"):
        links = grant_op["responses"][status]["links"]
        targets = {link["operationId"] for link in links.values()}
        issue = spec["paths"]["/v1/grants/{grant_id}/issue"]["post"]["operationId"]
        read = spec["paths"]["/v1/grants/{grant_id}"]["get"]["operationId"]
        assert {issue, read} <= targets


def test_spec_documents_every_refusal_as_problem_json() -> None:
    """Pass: every operation documents its 4xx answers as problem+json, none as FastAPI's
    `HTTPValidationError` (which the API never sends)."""
    spec = create_app(broker=BROKER).openapi()
    for operations in spec["paths"].values():
        for operation in operations.values():
            assert "422" not in operation["responses"]
            content = operation["responses"]["4XX"]["content"]
            assert list(content) == ["application/problem+json"]
