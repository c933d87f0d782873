"""Environment templates: the variables each engine's credential becomes."""

from __future__ import annotations

from urllib.parse import urlsplit

from jitbroker.client import Credential
from jitbroker.client.environment import credential_environment, env_name

DATABASE_FIELDS = {"username": "v-demo-ro-abc", "password": "p@ss:w/rd"}


def test_postgres_destination_gives_libpq_variables_and_a_database_url() -> None:
    env = credential_environment("database", DATABASE_FIELDS, "postgres://db.internal:6432/orders")

    assert env == {
        "PGHOST": "db.internal",
        "PGPORT": "6432",
        "PGDATABASE": "orders",
        "PGUSER": "v-demo-ro-abc",
        "PGPASSWORD": "p@ss:w/rd",
        "DATABASE_URL": "postgresql://v-demo-ro-abc:p%40ss%3Aw%2Frd@db.internal:6432/orders",
    }


def test_database_url_quotes_the_password_so_it_parses_back() -> None:
    env = credential_environment("database", DATABASE_FIELDS, "postgresql://127.0.0.1/postgres")

    url = urlsplit(env["DATABASE_URL"])
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", 5432, "/postgres")
    assert env["PGPORT"] == "5432"


def test_destination_query_is_kept_in_the_database_url() -> None:
    env = credential_environment(
        "database", DATABASE_FIELDS, "postgres://db.internal:5432/orders?sslmode=require"
    )

    assert env["DATABASE_URL"].endswith("@db.internal:5432/orders?sslmode=require")


def test_ipv6_host_is_bracketed_in_the_url_only() -> None:
    env = credential_environment("database", DATABASE_FIELDS, "postgres://[::1]:5432/postgres")

    assert env["PGHOST"] == "::1"
    assert "@[::1]:5432/postgres" in env["DATABASE_URL"]


def test_other_database_schemes_get_only_a_database_url() -> None:
    env = credential_environment("database", DATABASE_FIELDS, "mysql://db.internal:3306/shop")

    assert env == {"DATABASE_URL": "mysql://v-demo-ro-abc:p%40ss%3Aw%2Frd@db.internal:3306/shop"}


def test_token_on_an_openbao_path_gets_the_address() -> None:
    env = credential_environment(
        "token",
        {"token": "s.abc", "accessor": "acc", "policies": "demo-kv-read"},
        "http://127.0.0.1:8200/v1/secret/data/demo",
    )

    assert env == {"VAULT_TOKEN": "s.abc", "VAULT_ADDR": "http://127.0.0.1:8200"}


def test_token_for_another_destination_gets_only_the_token() -> None:
    env = credential_environment("token", {"token": "s.abc"}, "orders-api")

    assert env == {"VAULT_TOKEN": "s.abc"}


def test_engine_without_a_template_gets_prefixed_fields() -> None:
    env = credential_environment("future", {"api-key": "k"}, "https://svc.internal")

    assert env == {"JITBROKER_CREDENTIAL_API_KEY": "k"}


def test_credential_env_uses_its_engines_template() -> None:
    credential = Credential(
        grant_id="grt_1",
        task_id="tsk_1",
        profile="demo-db",
        engine="database",
        scopes=["read"],
        destination="postgres://127.0.0.1:5432/postgres",
        fields=DATABASE_FIELDS,
    )

    assert credential.env()["PGUSER"] == "v-demo-ro-abc"


def test_env_name_turns_a_profile_id_into_a_variable_prefix() -> None:
    assert env_name("demo-db") == "DEMO_DB"
    assert env_name("orders.prod-db") == "ORDERS_PROD_DB"
