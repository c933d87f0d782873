"""Configure an OpenBao dev server for the demo profiles (database roles, token role, KV data)."""

from __future__ import annotations

import logging

from jitbroker.config import BrokerConfig, ProfileConfig
from jitbroker.vault import VaultClient

log = logging.getLogger(__name__)

DEMO_SCHEMA = "jitbroker_demo"
# The demo profile's `monitor_dsn_env`: the connection revocation proofs look through.
DEMO_MONITOR_DSN_ENV = "JITBROKER_DEMO_PG_MONITOR_DSN"
DB_CONNECTION = "demo-postgres"

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


def prepare_demo_database(dsn: str) -> None:
    """Create the demo schema and table the database profiles grant access to."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {DEMO_SCHEMA}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {DEMO_SCHEMA}.orders "
            "(id serial PRIMARY KEY, item text NOT NULL, created_at timestamptz DEFAULT now())"
        )
        count = conn.execute(f"SELECT count(*) FROM {DEMO_SCHEMA}.orders").fetchone()
        if count is not None and count[0] == 0:
            conn.execute(f"INSERT INTO {DEMO_SCHEMA}.orders (item) VALUES ('espresso'), ('tea')")


def configure_demo_openbao(
    vault: VaultClient, config: BrokerConfig, *, postgres_url: str | None
) -> list[str]:
    """Create what the demo profiles need; returns the profiles that are ready to use."""
    mounts = vault.read("sys/mounts").get("data", {})
    ready: list[str] = []
    by_mount: dict[str, list[ProfileConfig]] = {}
    for profile in config.profiles.values():
        if profile.engine == "database":
            if postgres_url is None:
                log.warning("profile %s skipped: no PostgreSQL", profile.id)
                continue
            by_mount.setdefault(profile.mount, []).append(profile)
        else:
            _configure_token(vault, profile)
        ready.append(profile.id)
    for mount, profiles in by_mount.items():
        assert postgres_url is not None
        _configure_database(vault, mount, profiles, postgres_url, mounts)
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
