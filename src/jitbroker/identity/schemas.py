"""Who is calling: a verified workload or a verified human."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jitbroker.errors import Forbidden


@dataclass(frozen=True)
class WorkloadIdentity:
    """A token verified against its issuer and bound to exactly one registered workload."""

    workload_id: str
    issuer: str
    subject: str
    claims: dict[str, Any] = field(default_factory=dict, compare=False)
    jti: str | None = None
    expires_at: int | None = field(default=None, compare=False)

    @property
    def triggered_by(self) -> str | None:
        """The person behind this run, from the claims CI systems use for it."""
        for claim in ACTOR_CLAIMS:
            value = self.claims.get(claim)
            if isinstance(value, str) and value:
                return value
        return None


@dataclass(frozen=True)
class HumanIdentity:
    """A person (approver, operator) verified against an issuer marked `human`."""

    subject: str
    issuer: str
    email: str | None = None
    groups: tuple[str, ...] = ()
    jti: str | None = None
    expires_at: int | None = field(default=None, compare=False)


Principal = WorkloadIdentity | HumanIdentity

# GitHub puts the login in `actor`, GitLab in `user_login`/`user_email`; ours is `triggered_by`.
ACTOR_CLAIMS = ("actor", "triggered_by", "user_login", "user_email")


def same_person(actor: str | None, *, subject: str, email: str | None) -> bool:
    """Whether a run's actor names this person (case-insensitive; a login matches an email's
    local part). Errs towards "same": a false match only refuses an approval."""
    if not actor:
        return False
    names = {subject.casefold()}
    if email:
        names |= {email.casefold(), email.split("@", 1)[0].casefold()}
    return actor.casefold() in names or actor.split("@", 1)[0].casefold() in names


def require_admin(person: HumanIdentity, admin_groups: Sequence[str]) -> None:
    """Refuse (403) anyone outside the admin groups (`Settings.admin_groups`)."""
    if not set(person.groups) & set(admin_groups):
        raise Forbidden(f"this needs membership in one of {list(admin_groups)}")
