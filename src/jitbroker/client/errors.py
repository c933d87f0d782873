"""What the client raises: one base class, and a subclass per outcome a caller handles."""

from __future__ import annotations

from typing import Any

import httpx


class BrokerError(Exception):
    """The broker refused or could not answer; `status` and `problem` are its answer, if any."""

    def __init__(
        self, message: str, *, status: int | None = None, problem: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.problem = problem or {}


class Unauthenticated(BrokerError):
    """The broker did not accept the workload's identity token (401)."""


class Denied(BrokerError):
    """Policy or an approver refused the request; `rule` decided, `reason` says why."""

    def __init__(
        self,
        message: str,
        *,
        rule: str | None,
        reason: str,
        status: int | None = 403,
        problem: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, status=status, problem=problem)
        self.rule = rule
        self.reason = reason


class ApprovalRequired(BrokerError):
    """The grant waits for a human and the caller chose not to wait; `grant_id` can be awaited."""

    def __init__(self, message: str, *, grant: dict[str, Any]) -> None:
        super().__init__(message, status=202)
        self.grant_id = str(grant["grant_id"])
        self.rule = str((grant.get("decision") or {}).get("rule", ""))
        approval = grant.get("approval") or {}
        self.approver_groups: list[str] = list(approval.get("approver_groups") or [])


class ApprovalTimedOut(BrokerError):
    """Nobody approved in time: the caller's deadline passed or the approval window expired."""

    def __init__(self, message: str, *, grant_id: str) -> None:
        super().__init__(message)
        self.grant_id = grant_id


class BrokerUnavailable(BrokerError):
    """The broker could not be reached or kept answering 5xx after every retry."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        problem: dict[str, Any] | None = None,
        maybe_processed: bool = False,
    ) -> None:
        super().__init__(message, status=status, problem=problem)
        # True when the last attempt may have reached the broker: its effect is unknown.
        self.maybe_processed = maybe_processed


class IdentityTokenUnavailable(BrokerError):
    """No identity token could be found or fetched for this workload."""


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The RFC 9457 body of an error answer, or an empty dict when it is not JSON."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def error_for(response: httpx.Response, doing: str) -> BrokerError:
    """The typed error for a refusal: 401 → Unauthenticated, 403 → Denied, 5xx → unavailable."""
    problem = problem_of(response)
    detail = str(problem.get("detail") or problem.get("title") or response.reason_phrase)
    message = f"{doing}: {response.status_code} {detail}"
    status = response.status_code
    if status == 401:
        return Unauthenticated(message, status=status, problem=problem)
    if status == 403:
        rule = problem.get("rule")
        return Denied(
            message,
            rule=str(rule) if rule else None,
            reason=detail,
            status=status,
            problem=problem,
        )
    if status >= 500:
        return BrokerUnavailable(message, status=status, problem=problem)
    return BrokerError(message, status=status, problem=problem)
