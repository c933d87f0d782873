"""Look where the credential lived and confirm it is gone: OpenBao, the route, the database."""

from __future__ import annotations

import os

from jitbroker.bootstrap import Broker
from jitbroker.errors import DownstreamUnverified
from jitbroker.grants.schemas import GrantRecord
from jitbroker.revocation.receipts import ReceiptCheck


def verify_revoked(broker: Broker, grant: GrantRecord) -> list[ReceiptCheck]:
    """Every check that applies to this grant; a `failed` one means revocation is not done."""
    assert grant.lease_ref is not None
    engine = broker.engines[grant.engine]
    checks = [
        ReceiptCheck(
            name="openbao_lease_absent",
            status="passed" if engine.is_revoked(grant.lease_ref) else "failed",
            detail="lease lookup in OpenBao says it no longer exists",
        ),
        ReceiptCheck(
            name="route_closed",
            status="passed" if broker.routes.get(grant.grant_id) is None else "failed",
            detail="gateways deny this grant at /v1/authz/check",
        ),
    ]
    if grant.engine == "database":
        checks.extend(_postgres_checks(broker, grant))
    return checks


def _postgres_checks(broker: Broker, grant: GrantRecord) -> list[ReceiptCheck]:
    profile = broker.config.profiles.get(grant.profile)
    dsn = os.environ.get(profile.monitor_dsn_env, "") if profile and profile.monitor_dsn_env else ""
    if not dsn or not grant.principal:
        return [
            ReceiptCheck(
                name="postgres_role_absent",
                status="skipped",
                detail="no monitoring connection configured for this profile (monitor_dsn_env)",
            )
        ]
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            role = conn.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname = %s", (grant.principal,)
            ).fetchone()
            # A session can outlive its dropped role; it then shows no usename, only a usesysid
            # that no role has any more, so both kinds count as still live.
            sessions = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s OR "
                "(usesysid IS NOT NULL AND usesysid NOT IN (SELECT oid FROM pg_roles))",
                (grant.principal,),
            ).fetchone()
    except psycopg.Error as exc:
        raise DownstreamUnverified(
            f"cannot reach the database to verify revocation ({type(exc).__name__})"
        ) from None
    roles = role[0] if role else 0
    live = sessions[0] if sessions else 0
    return [
        ReceiptCheck(
            name="postgres_role_absent",
            status="passed" if roles == 0 else "failed",
            detail=f"pg_roles has {roles} role named {grant.principal}",
        ),
        ReceiptCheck(
            name="postgres_sessions_absent",
            status="passed" if live == 0 else "failed",
            detail=f"pg_stat_activity has {live} session(s) of {grant.principal} "
            "or of a dropped role",
        ),
    ]
