"""Look where the credential lived and confirm it is gone: OpenBao, the route, the database."""

from __future__ import annotations

import os

from jitbroker.bootstrap import Broker
from jitbroker.engines.base import CredentialEngine
from jitbroker.engines.pki import PkiEngine, split_lease_ref
from jitbroker.engines.ssh import serial_of
from jitbroker.errors import DownstreamUnverified
from jitbroker.grants.schemas import GrantRecord
from jitbroker.revocation.receipts import ReceiptCheck

LEASE_CHECK_DETAIL = {
    "pki": "OpenBao records the certificate revoked (or it expired)",
}


def verify_revoked(broker: Broker, grant: GrantRecord) -> list[ReceiptCheck]:
    """Every check that applies to this grant; a `failed` one means revocation is not done."""
    assert grant.lease_ref is not None
    engine = broker.engines[grant.engine]
    checks = [
        _openbao_check(engine, grant, grant.lease_ref),
        ReceiptCheck(
            name="route_closed",
            status="passed" if broker.routes.get(grant.grant_id) is None else "failed",
            detail="gateways deny this grant at /v1/authz/check",
        ),
    ]
    if grant.engine == "database":
        checks.extend(_postgres_checks(broker, grant))
    elif grant.engine == "redis":
        checks.extend(_redis_checks(broker, grant))
    elif grant.engine == "pki" and isinstance(engine, PkiEngine):
        checks.append(_pki_crl_check(broker, engine, grant.lease_ref))
    elif grant.engine == "ssh":
        checks.append(_ssh_validity_check(broker, grant, grant.lease_ref))
    return checks


def _openbao_check(engine: CredentialEngine, grant: GrantRecord, lease_ref: str) -> ReceiptCheck:
    if grant.engine == "ssh":
        return ReceiptCheck(
            name="openbao_lease_absent",
            status="skipped",
            detail="OpenBao keeps no lease and no revocation list for SSH certificates "
            "(see ssh_cert_expired_or_krl)",
        )
    return ReceiptCheck(
        name="openbao_lease_absent",
        status="passed" if engine.is_revoked(lease_ref) else "failed",
        detail=LEASE_CHECK_DETAIL.get(
            grant.engine, "lease lookup in OpenBao says it no longer exists"
        ),
    )


def _pki_crl_check(broker: Broker, engine: PkiEngine, lease_ref: str) -> ReceiptCheck:
    mount, serial = split_lease_ref(lease_ref)
    crl = engine.crl_status(lease_ref)
    if crl.listed:
        status, detail = "passed", f"the CRL of {mount} lists serial {serial}"
    elif crl.not_after is None or crl.not_after <= broker.clock():
        # OpenBao refuses to list an expired certificate: expiry already ended it.
        expired = f"at {crl.not_after.isoformat()}" if crl.not_after else "and was tidied"
        status, detail = "passed", f"serial {serial} expired {expired}; no CRL needed"
    else:
        status = "failed"
        detail = (
            f"the CRL of {mount} does not list serial {serial}, "
            f"valid until {crl.not_after.isoformat()}"
        )
    return ReceiptCheck(name="pki_serial_on_crl", status=status, detail=detail)


def _ssh_validity_check(broker: Broker, grant: GrantRecord, lease_ref: str) -> ReceiptCheck:
    # The grant expires no earlier than the certificate's valid-before (see SshEngine.issue).
    assert grant.expires_at is not None
    serial, until = serial_of(lease_ref), grant.expires_at.isoformat()
    if grant.expires_at <= broker.clock():
        return ReceiptCheck(
            name="ssh_cert_expired_or_krl",
            status="passed",
            detail=f"SSH certificate serial {serial} expired (valid before {until})",
        )
    return ReceiptCheck(
        name="ssh_cert_expired_or_krl",
        status="bounded",
        detail=f"OpenBao cannot revoke SSH certificates: serial {serial} stays valid until "
        f"{until} (valid-before) on hosts whose RevokedKeys KRL does not list it",
    )


def _redis_checks(broker: Broker, grant: GrantRecord) -> list[ReceiptCheck]:
    profile = broker.config.profiles.get(grant.profile)
    url = os.environ.get(profile.monitor_dsn_env, "") if profile and profile.monitor_dsn_env else ""
    if not url or not grant.principal:
        return [
            ReceiptCheck(
                name="redis_user_absent",
                status="skipped",
                detail="no monitoring connection configured for this profile (monitor_dsn_env)",
            )
        ]
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3) as monitor:
            user = monitor.acl_getuser(grant.principal)
            clients = [c for c in monitor.client_list() if c.get("user") == grant.principal]
    except redis.RedisError as exc:
        raise DownstreamUnverified(
            f"cannot reach Redis to verify revocation ({type(exc).__name__})"
        ) from None
    return [
        ReceiptCheck(
            name="redis_user_absent",
            status="passed" if user is None else "failed",
            detail=f"ACL GETUSER {grant.principal} finds {'no' if user is None else 'a'} user",
        ),
        ReceiptCheck(
            name="redis_sessions_absent",
            status="passed" if not clients else "failed",
            detail=f"CLIENT LIST has {len(clients)} connection(s) of {grant.principal}",
        ),
    ]


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
