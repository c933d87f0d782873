"""What a task hands back: an issued credential that masks its secrets, and a task's completion."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jitbroker.client.environment import credential_environment

# Fields shown in repr/str; every other credential field is a secret and prints as ***.
SHOWN_FIELDS = frozenset({"username", "accessor", "policies", "serial", "not_after", "principals"})


class Credential:
    """An issued credential: `cred.password` or `cred["password"]`; masked in repr and str."""

    __slots__ = (
        "_fields",
        "destination",
        "engine",
        "expires_at",
        "grant_id",
        "lease_ttl_seconds",
        "profile",
        "scopes",
        "task_id",
    )

    def __init__(
        self,
        *,
        grant_id: str,
        task_id: str,
        profile: str,
        engine: str,
        scopes: list[str],
        destination: str,
        fields: dict[str, str],
        lease_ttl_seconds: int | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        self.grant_id = grant_id
        self.task_id = task_id
        self.profile = profile
        self.engine = engine
        self.scopes = scopes
        self.destination = destination
        self.lease_ttl_seconds = lease_ttl_seconds
        self.expires_at = expires_at
        self._fields = dict(fields)

    @classmethod
    def from_issued_grant(cls, grant: dict[str, Any]) -> Credential:
        """The credential of an issuing response (201 on request, 200 on issue)."""
        expires_at = grant.get("expires_at")
        return cls(
            grant_id=str(grant["grant_id"]),
            task_id=str(grant["task_id"]),
            profile=str(grant["profile"]),
            engine=str(grant.get("engine") or ""),
            scopes=[str(s) for s in grant.get("scopes") or []],
            destination=str(grant.get("destination") or ""),
            fields={str(k): str(v) for k, v in (grant.get("credential") or {}).items()},
            lease_ttl_seconds=grant.get("lease_ttl_seconds"),
            expires_at=datetime.fromisoformat(expires_at) if expires_at else None,
        )

    def __getitem__(self, name: str) -> str:
        return self._fields[name]

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(f"credential has no field {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    @property
    def field_names(self) -> list[str]:
        """The credential's field names (never their values)."""
        return list(self._fields)

    def env(self) -> dict[str, str]:
        """Environment variables for this credential, from its engine's template."""
        return credential_environment(self.engine, self._fields, self.destination)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={value!r}" if name in SHOWN_FIELDS else f"{name}=***"
            for name, value in self._fields.items()
        )
        return f"Credential(profile={self.profile!r}, {shown})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Credential is not pickled: its secrets stay in this process")


@dataclass(frozen=True)
class Completion:
    """The answer to completing a task: `completed` once OpenBao confirmed every revocation."""

    task_id: str
    state: str
    revocations: list[dict[str, Any]] = field(default_factory=list)
    receipts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def confirmed(self) -> bool:
        """True when the broker confirmed every grant of the task revoked."""
        return self.state == "completed"
