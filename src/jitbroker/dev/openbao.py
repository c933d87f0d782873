"""Configure an OpenBao dev server for the demo profiles (database roles, token role, KV data,
a PKI CA, an SSH CA, Redis ACL roles)."""

from __future__ import annotations

import json
import logging
from urllib.parse import unquote, urlsplit

from jitbroker.config import BrokerConfig, ProfileConfig
from jitbroker.errors import VaultRejected
from jitbroker.vault import VaultClient

log = logging.getLogger(__name__)

DEMO_SCHEMA = "jitbroker_demo"
# The demo profile's `monitor_dsn_env`: the connection revocation proofs look through.
DEMO_MONITOR_DSN_ENV = "JITBROKER_DEMO_PG_MONITOR_DSN"
DB_CONNECTION = "demo-postgres"
# The demo-redis profile's `monitor_dsn_env`: an admin URL of the Redis whose ACL users it issues.
DEMO_REDIS_MONITOR_ENV = "JITBROKER_DEMO_REDIS_MONITOR_URL"
REDIS_CONNECTION = "demo-redis"
# ACL rules per scope (the Redis plugin's creation statements): only keys under `demo:`, and
# nothing that reaches past them (KEYS, CLIENT KILL, …).
REDIS_ACL_RULES = {
    "read": ["~demo:*", "+@read", "-@dangerous", "+ping"],
    "write": ["~demo:*", "+@read", "+@write", "-@dangerous", "+ping"],
}
CA_TTL = "87600h"

_GRANTS = {
    "read": [
        f'GRANT USAGE ON SCHEMA {DEMO_SCHEMA} TO "{{{{name}}}}";',
        f'GRANT SELECT ON ALL TABLES IN SCHEMA {DEMO_SCHEMA} TO "{{{{name}}}}";',
    ],
    "write": [
        f'GRANT USAGE ON SCHEMA {DEMO_SCHEMA} TO "{{{{name}}}}";',
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {DEMO_SCHEMA} "
        f'TO "{{{{name}}}}";',
        f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA {DEMO_SCHEMA} TO "{{{{name}}}}";',
    ],
    "admin": [
        f'GRANT ALL ON SCHEMA {DEMO_SCHEMA} TO "{{{{name}}}}";',
        f'GRANT ALL ON ALL TABLES IN SCHEMA {DEMO_SCHEMA} TO "{{{{name}}}}";',
        f'GRANT ALL ON ALL SEQUENCES IN SCHEMA {DEMO_SCHEMA} TO "{{{{name}}}}";',
    ],
}
CREATE_USER = (
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
)
# Sessions die first, then privileges, then the role: a revoked user keeps no open connection.
REVOKE_USER = [
    'ALTER ROLE "{{name}}" NOLOGIN;',
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';",
    f'REVOKE ALL ON ALL TABLES IN SCHEMA {DEMO_SCHEMA} FROM "{{{{name}}}}";',
    f'REVOKE ALL ON ALL SEQUENCES IN SCHEMA {DEMO_SCHEMA} FROM "{{{{name}}}}";',
    f'REVOKE ALL ON SCHEMA {DEMO_SCHEMA} FROM "{{{{name}}}}";',
    'REASSIGN OWNED BY "{{name}}" TO CURRENT_USER;',
    'DROP OWNED BY "{{name}}";',
    'DROP ROLE IF EXISTS "{{name}}";',
]
# An issued lease starts this short and is renewed to the grant TTL straight away, so a broker
# that dies between the two leaves a user that lives seconds, not the profile cap.
INITIAL_LEASE_SECONDS = 30
KV_READ_POLICY = 'path "secret/data/demo/*" { capabilities = ["read"] }'


# A dev server keeps its leases in memory: users issued by one that has stopped are never
# revoked. Past their VALID UNTIL (plus this margin) they cannot log in, but each stays a grantee
# in the demo table's ACL, which PostgreSQL keeps in one row: a few thousand fill it.
STALE_DEMO_USER_MARGIN = "10 minutes"


def prepare_demo_database(dsn: str) -> None:
    """Create the demo schema and table the database profiles grant access to, and drop demo
    users left behind by earlier dev servers."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        stale = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-%%' "
            "AND rolvaliduntil < now() - %s::interval",
            (STALE_DEMO_USER_MARGIN,),
        ).fetchall()
        for (name,) in stale:
            for statement in REVOKE_USER[2:]:
                conn.execute(statement.replace("{{name}}", name.replace('"', '""')))
        if stale:
            log.info("dropped %d expired demo users left by earlier dev servers", len(stale))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {DEMO_SCHEMA}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {DEMO_SCHEMA}.orders "
            "(id serial PRIMARY KEY, item text NOT NULL, created_at timestamptz DEFAULT now())"
        )
        count = conn.execute(f"SELECT count(*) FROM {DEMO_SCHEMA}.orders").fetchone()
        if count is not None and count[0] == 0:
            conn.execute(f"INSERT INTO {DEMO_SCHEMA}.orders (item) VALUES ('espresso'), ('tea')")


def configure_demo_openbao(
    vault: VaultClient,
    config: BrokerConfig,
    *,
    postgres_url: str | None,
    redis_url: str | None = None,
) -> list[str]:
    """Create what the demo profiles need; returns the profiles that are ready to use."""
    mounts = vault.read("sys/mounts").get("data", {})
    ready: list[str] = []
    by_mount: dict[str, list[ProfileConfig]] = {}
    redis_by_mount: dict[str, list[ProfileConfig]] = {}
    for profile in config.profiles.values():
        if profile.engine == "database":
            if postgres_url is None:
                log.warning("profile %s skipped: no PostgreSQL", profile.id)
                continue
            by_mount.setdefault(profile.mount, []).append(profile)
        elif profile.engine == "redis":
            if redis_url is None:
                log.warning("profile %s skipped: no Redis with ACLs", profile.id)
                continue
            redis_by_mount.setdefault(profile.mount, []).append(profile)
        elif profile.engine == "pki":
            _configure_pki(vault, profile, config, mounts)
        elif profile.engine == "ssh":
            _configure_ssh(vault, profile, config, mounts)
        else:
            _configure_token(vault, profile)
        ready.append(profile.id)
    for mount, profiles in by_mount.items():
        assert postgres_url is not None
        _configure_database(vault, mount, profiles, postgres_url, mounts)
    for mount, profiles in redis_by_mount.items():
        assert redis_url is not None
        _configure_redis(vault, mount, profiles, redis_url, mounts)
    if "secret/" not in mounts:
        vault.write("sys/mounts/secret", type="kv", options={"version": "2"})
    vault.write("secret/data/demo/greeting", data={"message": "hello from jitbroker"})
    return ready


def _configure_database(
    vault: VaultClient,
    mount: str,
    profiles: list[ProfileConfig],
    postgres_url: str,
    mounts: dict[str, object],
) -> None:
    """One connection per mount; one role per scope binding, capped by its largest profile TTL."""
    if f"{mount}/" not in mounts:
        vault.write(f"sys/mounts/{mount}", type="database")
    roles: dict[str, tuple[str, int]] = {}
    for profile in profiles:
        for scope in profile.scopes:
            _, cap = roles.get(scope.role, (scope.name, 0))
            roles[scope.role] = (scope.name, max(cap, profile.max_ttl_seconds))
    vault.write(
        f"{mount}/config/{DB_CONNECTION}",
        plugin_name="postgresql-database-plugin",
        connection_url=postgres_url,
        username="postgres",
        password="unused-with-trust-auth",
        allowed_roles=sorted(roles),
        verify_connection=True,
    )
    for role, (scope_name, cap) in roles.items():
        vault.write(
            f"{mount}/roles/{role}",
            db_name=DB_CONNECTION,
            creation_statements=[CREATE_USER, *_GRANTS.get(scope_name, _GRANTS["read"])],
            revocation_statements=REVOKE_USER,
            renew_statements=["ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';"],
            default_ttl=min(INITIAL_LEASE_SECONDS, cap),
            max_ttl=cap,
        )


def _configure_token(vault: VaultClient, profile: ProfileConfig) -> None:
    vault.write("sys/policies/acl/demo-kv-read", policy=KV_READ_POLICY)
    for scope in profile.scopes:
        vault.write(
            f"{profile.mount}/roles/{scope.role}",
            allowed_policies=["demo-kv-read"],
            orphan=True,
            renewable=False,
            token_explicit_max_ttl=profile.max_ttl_seconds,
        )


def _mount_once(vault: VaultClient, mounts: dict[str, object], mount: str, kind: str) -> bool:
    """Enable a secrets engine at `mount` unless it is there; True when it was just enabled."""
    if f"{mount}/" in mounts:
        return False
    vault.write(f"sys/mounts/{mount}", type=kind, config={"max_lease_ttl": CA_TTL})
    mounts[f"{mount}/"] = {"type": kind}
    return True


def _has_ca(vault: VaultClient, path: str) -> bool:
    try:
        vault.read(path)
    except VaultRejected:
        return False
    return True


def _configure_pki(
    vault: VaultClient, profile: ProfileConfig, config: BrokerConfig, mounts: dict[str, object]
) -> None:
    """A root CA on the mount and one client-certificate role per scope, named by workload."""
    mount = profile.mount
    if _mount_once(vault, mounts, mount, "pki") or not _has_ca(vault, f"{mount}/cert/ca"):
        vault.write(
            f"{mount}/root/generate/internal",
            common_name=f"jitbroker demo client CA ({mount})",
            ttl=CA_TTL,
            key_type="ec",
            key_bits=256,
        )
    for scope in profile.scopes:
        vault.write(
            f"{mount}/roles/{scope.role}",
            # The broker puts the workload id in the common name; nothing else is allowed.
            allowed_domains=sorted(config.workloads),
            allow_bare_domains=True,
            allow_subdomains=False,
            allow_localhost=False,
            allow_ip_sans=False,
            enforce_hostnames=False,
            client_flag=True,
            server_flag=False,
            key_type="ec",
            key_bits=256,
            max_ttl=profile.max_ttl_seconds,
            # Stored, or it could not be revoked by serial.
            no_store=False,
            require_cn=True,
        )


def _configure_ssh(
    vault: VaultClient, profile: ProfileConfig, config: BrokerConfig, mounts: dict[str, object]
) -> None:
    """An SSH user CA on the mount and one role per scope, limited to the scope's principals."""
    mount = profile.mount
    if _mount_once(vault, mounts, mount, "ssh") or not _has_ca(vault, f"{mount}/config/ca"):
        vault.write(f"{mount}/config/ca", generate_signing_key=True, key_type="ssh-ed25519")
    for scope in profile.scopes:
        vault.write(
            f"{mount}/roles/{scope.role}",
            key_type="ca",
            allow_user_certificates=True,
            allow_host_certificates=False,
            # Without principals on the scope, each workload may only be itself.
            allowed_users=",".join(scope.principals or sorted(config.workloads)),
            allow_user_key_ids=True,
            default_user="",
            max_ttl=profile.max_ttl_seconds,
            allowed_extensions="permit-pty",
            default_extensions={"permit-pty": ""},
        )


def _configure_redis(
    vault: VaultClient,
    mount: str,
    profiles: list[ProfileConfig],
    redis_url: str,
    mounts: dict[str, object],
) -> None:
    """One redis-database-plugin connection per mount; one ACL role per scope binding."""
    if f"{mount}/" not in mounts:
        vault.write(f"sys/mounts/{mount}", type="database")
        mounts[f"{mount}/"] = {"type": "database"}
    roles: dict[str, tuple[str, int]] = {}
    for profile in profiles:
        for scope in profile.scopes:
            _, cap = roles.get(scope.role, (scope.name, 0))
            roles[scope.role] = (scope.name, max(cap, profile.max_ttl_seconds))
    target = urlsplit(redis_url)
    vault.write(
        f"{mount}/config/{REDIS_CONNECTION}",
        plugin_name="redis-database-plugin",
        host=target.hostname or "127.0.0.1",
        port=target.port or 6379,
        username=unquote(target.username or "default"),
        password=unquote(target.password or ""),
        allowed_roles=sorted(roles),
        verify_connection=True,
    )
    for role, (scope_name, cap) in roles.items():
        vault.write(
            f"{mount}/roles/{role}",
            db_name=REDIS_CONNECTION,
            creation_statements=json.dumps(
                REDIS_ACL_RULES.get(scope_name, REDIS_ACL_RULES["read"])
            ),
            default_ttl=min(INITIAL_LEASE_SECONDS, cap),
            max_ttl=cap,
        )
