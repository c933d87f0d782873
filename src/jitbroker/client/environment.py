"""Environment templates: the variables a credential becomes, per engine, for the SDK and `exec`.

A template takes the issued credential's fields and the profile's destination (both from the
issuing response) and returns environment variables. Add an engine by adding its template to
`ENV_TEMPLATES`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from urllib.parse import SplitResult, quote, urlsplit

log = logging.getLogger(__name__)

EnvTemplate = Callable[[Mapping[str, str], str], dict[str, str]]
POSTGRES_SCHEMES = frozenset({"postgres", "postgresql"})
POSTGRES_DEFAULT_PORT = 5432
NOT_A_NAME_CHARACTER = re.compile(r"[^A-Z0-9]+")


def database_environment(fields: Mapping[str, str], destination: str) -> dict[str, str]:
    """libpq variables and DATABASE_URL for a dynamic database user at `destination`."""
    username, password = fields["username"], fields["password"]
    target = urlsplit(destination)
    if not target.hostname:
        log.warning("destination %r names no host; only the user and password are set", destination)
        return {"DB_USERNAME": username, "DB_PASSWORD": password}
    host = target.hostname
    netloc_host = f"[{host}]" if ":" in host else host
    if target.scheme in POSTGRES_SCHEMES:
        port = target.port or POSTGRES_DEFAULT_PORT
        database = target.path.lstrip("/")
        env = {"PGHOST": host, "PGPORT": str(port), "PGUSER": username, "PGPASSWORD": password}
        if database:
            env["PGDATABASE"] = database
        env["DATABASE_URL"] = _url_with_user(target, "postgresql", f"{netloc_host}:{port}", fields)
        return env
    netloc = f"{netloc_host}:{target.port}" if target.port else netloc_host
    return {"DATABASE_URL": _url_with_user(target, target.scheme, netloc, fields)}


def token_environment(fields: Mapping[str, str], destination: str) -> dict[str, str]:
    """VAULT_TOKEN, and VAULT_ADDR when the destination is an OpenBao/Vault API URL."""
    env = {"VAULT_TOKEN": fields["token"]}
    target = urlsplit(destination)
    if target.scheme in ("http", "https") and target.netloc and target.path.startswith("/v1/"):
        env["VAULT_ADDR"] = f"{target.scheme}://{target.netloc}"
    return env


def pki_environment(fields: Mapping[str, str], destination: str) -> dict[str, str]:
    """The client certificate, its private key and the CA chain as PEM strings."""
    del destination  # the certificate is for any service that trusts the CA
    return {
        "JITBROKER_TLS_CERT": fields["certificate"],
        "JITBROKER_TLS_KEY": fields["private_key"],
        "JITBROKER_TLS_CA": fields["ca_chain"],
        "JITBROKER_TLS_SERIAL": fields["serial"],
    }


def ssh_environment(fields: Mapping[str, str], destination: str) -> dict[str, str]:
    """The signed SSH certificate (its private key never left the workload) and its principals."""
    del destination
    return {
        "JITBROKER_SSH_CERT": fields["certificate"],
        "JITBROKER_SSH_PRINCIPALS": fields["principals"],
        "JITBROKER_SSH_SERIAL": fields["serial"],
    }


def redis_environment(fields: Mapping[str, str], destination: str) -> dict[str, str]:
    """REDIS_USERNAME/REDIS_PASSWORD, REDISCLI_AUTH, and REDIS_URL for a redis:// destination."""
    env = {
        "REDIS_USERNAME": fields["username"],
        "REDIS_PASSWORD": fields["password"],
        "REDISCLI_AUTH": fields["password"],
    }
    target = urlsplit(destination)
    if target.scheme in ("redis", "rediss") and target.hostname:
        host = f"[{target.hostname}]" if ":" in target.hostname else target.hostname
        netloc = f"{host}:{target.port}" if target.port else host
        env["REDIS_URL"] = _url_with_user(target, target.scheme, netloc, fields)
    return env


ENV_TEMPLATES: dict[str, EnvTemplate] = {
    "database": database_environment,
    "token": token_environment,
    "pki": pki_environment,
    "ssh": ssh_environment,
    "redis": redis_environment,
}


def credential_environment(
    engine: str, fields: Mapping[str, str], destination: str
) -> dict[str, str]:
    """The variables for a credential of `engine` (unknown: JITBROKER_CREDENTIAL_<FIELD>)."""
    template = ENV_TEMPLATES.get(engine)
    if template is not None:
        return template(fields, destination)
    log.warning("no environment template for engine %r; using JITBROKER_CREDENTIAL_*", engine)
    return {f"JITBROKER_CREDENTIAL_{env_name(name)}": value for name, value in fields.items()}


def env_name(text: str) -> str:
    """`text` as an environment variable name part: `demo-db` → `DEMO_DB`."""
    return NOT_A_NAME_CHARACTER.sub("_", text.upper()).strip("_")


def _url_with_user(target: SplitResult, scheme: str, netloc: str, fields: Mapping[str, str]) -> str:
    user = f"{quote(fields['username'], safe='')}:{quote(fields['password'], safe='')}"
    url = f"{scheme}://{user}@{netloc}{target.path}"
    return f"{url}?{target.query}" if target.query else url
