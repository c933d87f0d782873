"""Finishing touches to the generated OpenAPI document: links between operations, problem+json.

Links say which response value feeds which call (open a task → request grants on it → read,
issue, revoke them → complete the task); they document the workflow and drive schemathesis'
stateful tests along it. Every 4xx is documented as the RFC 9457 problem+json the API sends,
in place of FastAPI's `HTTPValidationError`, which the API never sends.
"""

from __future__ import annotations

from typing import Any

# (method, path of the producing operation) → (its id field, the operations taking it as a path
# parameter of the same name). Every success response of the producer gets the links.
LINKS: dict[tuple[str, str], tuple[str, list[tuple[str, str]]]] = {
    ("post", "/v1/tasks"): (
        "task_id",
        [
            ("get", "/v1/tasks/{task_id}"),
            ("post", "/v1/tasks/{task_id}/grants"),
            ("post", "/v1/tasks/{task_id}/heartbeat"),
            ("post", "/v1/tasks/{task_id}/complete"),
            ("get", "/v1/tasks/{task_id}/receipt"),
        ],
    ),
    ("post", "/v1/tasks/{task_id}/grants"): (
        "grant_id",
        [
            ("get", "/v1/grants/{grant_id}"),
            ("post", "/v1/grants/{grant_id}/issue"),
            ("post", "/v1/grants/{grant_id}/revoke"),
            ("post", "/v1/grants/{grant_id}/acknowledge"),
        ],
    ),
}


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; `detail` names what was wrong.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "minLength": 1},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


def finish_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The generated spec with problem+json 4xx responses and `LINKS`."""
    return add_links(document_problems(spec))


def document_problems(spec: dict[str, Any]) -> dict[str, Any]:
    """Document every operation's 4xx answers (422 included) as problem+json."""
    spec.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    problem = {
        "description": "Refused: problem+json naming what was wrong",
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["4XX"] = problem
    return spec


def add_links(spec: dict[str, Any]) -> dict[str, Any]:
    """Add `LINKS` to the 2xx responses of the generated spec (operations absent are skipped)."""
    paths = spec.get("paths", {})
    for (method, path), (field, targets) in LINKS.items():
        producer = paths.get(path, {}).get(method)
        if producer is None:
            continue
        links = {
            paths[target_path][target_method]["operationId"]: {
                "operationId": paths[target_path][target_method]["operationId"],
                "parameters": {field: f"$response.body#/{field}"},
            }
            for target_method, target_path in targets
            if target_method in paths.get(target_path, {})
        }
        for status, response in producer["responses"].items():
            if status.startswith("2"):
                response["links"] = links
    return spec
