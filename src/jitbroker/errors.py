"""The one error tree: every failure a caller can see is a BrokerError rendered as RFC 9457."""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_BASE = "https://jitbroker.dev/problems/"


class BrokerError(Exception):
    """A failure with an HTTP status, a stable problem type and a human-readable detail."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    slug: ClassVar[str] = "internal"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.slug

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The problem+json body for this error."""
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class InvalidRequest(BrokerError):
    status = 422
    title = "Invalid request"
    slug = "invalid-request"


class Unauthenticated(BrokerError):
    status = 401
    title = "Unauthenticated"
    slug = "unauthenticated"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'


class Forbidden(BrokerError):
    status = 403
    title = "Forbidden"
    slug = "forbidden"


class PolicyDenied(Forbidden):
    title = "Denied by policy"
    slug = "policy-denied"


class WorkloadSuspended(Forbidden):
    title = "Workload suspended"
    slug = "workload-suspended"


class NotFound(BrokerError):
    status = 404
    title = "Not found"
    slug = "not-found"


class Conflict(BrokerError):
    status = 409
    title = "Conflict"
    slug = "conflict"


class BadHttpRequest(BrokerError):
    status = 400
    title = "Malformed HTTP request"
    slug = "malformed-request"


class RequestTimeout(BrokerError):
    status = 408
    title = "Request timeout"
    slug = "request-timeout"


class PayloadTooLarge(BrokerError):
    status = 413
    title = "Request body too large"
    slug = "payload-too-large"


class HeaderFieldsTooLarge(BrokerError):
    status = 431
    title = "Request header fields too large"
    slug = "header-fields-too-large"


class RateLimited(BrokerError):
    """The caller sent more requests than its per-minute budget; retry after the window."""

    status = 429
    title = "Too many requests"
    slug = "rate-limited"

    def __init__(self, detail: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers["Retry-After"] = str(retry_after)


class ServiceUnavailable(BrokerError):
    status = 503
    title = "Service unavailable"
    slug = "unavailable"

    def __init__(self, detail: str, *, retry_after: int = 5, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers["Retry-After"] = str(retry_after)


class VaultError(ServiceUnavailable):
    """Base of OpenBao/Vault failures; callers see 503, never the backend's message verbatim."""

    title = "Secrets backend error"
    slug = "vault-error"


class VaultUnavailable(VaultError):
    """OpenBao could not be reached or answered 5xx: worth retrying."""

    title = "Secrets backend unavailable"
    slug = "vault-unavailable"


class VaultRejected(VaultError):
    """OpenBao refused the request (4xx): retrying the same call will not help."""

    title = "Secrets backend refused the request"
    slug = "vault-rejected"


class VaultLeaseGone(VaultRejected):
    """OpenBao does not know the lease or token (expired, revoked, or never existed)."""

    title = "Lease not found"
    slug = "lease-not-found"


class DownstreamUnverified(ServiceUnavailable):
    """The downstream system could not be asked, or still shows the credential: retry."""

    title = "Revocation not yet verified"
    slug = "revocation-unverified"


class RevocationBacklog(ServiceUnavailable):
    """A backend's revocations are failing or piling up: we never issue what we cannot take back."""

    title = "Revocation backlog"
    slug = "revocation-backlog"


class StateUnavailable(ServiceUnavailable):
    """Redis could not be reached or refused a write."""

    title = "State store unavailable"
    slug = "state-unavailable"


class DeliveryFailed(BrokerError):
    """A webhook receiver could not be reached or did not answer 2xx: worth retrying."""

    status = 502
    title = "Webhook delivery failed"
    slug = "webhook-delivery-failed"


class ConfigError(Exception):
    """The configuration directory is invalid; the message names file, entry and field."""
