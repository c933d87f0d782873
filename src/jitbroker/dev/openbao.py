"""Configure an OpenBao dev server for the demo profiles (database roles, token role, KV data)."""

from __future__ import annotations

import logging

from jitbroker.config import BrokerConfig, ProfileConfig
from jitbroker.vault import VaultClient

log = logging.getLogger(__name__)

DEMO_SCHEMA = "jitbroker_demo"
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
    for profile in config.profiles.values():
        if profile.engine == "database":
            if postgres_url is None:
                log.warning("profile %s skipped: no PostgreSQL", profile.id)
                continue
            _configure_database(vault, profile, postgres_url, mounts)
        else:
            _configure_token(vault, profile)
        ready.append(profile.id)
    if "secret/" not in mounts:
        vault.write("sys/mounts/secret", type="kv", options={"version": "2"})
    vault.write("secret/data/demo/greeting", data={"message": "hello from jitbroker"})
    return ready


def _configure_database(
    vault: VaultClient, profile: ProfileConfig, postgres_url: str, mounts: dict[str, object]
) -> None:
    if f"{profile.mount}/" not in mounts:
        vault.write(f"sys/mounts/{profile.mount}", type="database")
    vault.write(
        f"{profile.mount}/config/{DB_CONNECTION}",
        plugin_name="postgresql-database-plugin",
        connection_url=postgres_url,
        username="postgres",
        password="unused-with-trust-auth",
        allowed_roles=[s.role for s in profile.scopes],
        verify_connection=True,
    )
    for scope in profile.scopes:
        vault.write(
            f"{profile.mount}/roles/{scope.role}",
            db_name=DB_CONNECTION,
            creation_statements=[CREATE_USER, *_GRANTS.get(scope.name, _GRANTS["read"])],
            revocation_statements=REVOKE_USER,
            renew_statements=["ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';"],
            default_ttl=min(INITIAL_LEASE_SECONDS, profile.max_ttl_seconds),
            max_ttl=profile.max_ttl_seconds,
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
