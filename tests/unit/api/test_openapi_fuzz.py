"""Stateless schemathesis fuzzing of the OpenAPI spec, in-process against the memory broker."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.openapi import from_asgi
from starlette.types import ASGIApp, Receive, Scope, Send
from tests.unit.fakes import memory_broker, write_demo_config

from jitbroker.app import create_app
from jitbroker.identity.dev_issuer import DevIssuer

MAX_EXAMPLES = 8

# Built at import: schemathesis needs the schema while pytest collects the tests.
_WORKDIR = tempfile.TemporaryDirectory(prefix="jitbroker-fuzz-")
_CONFIG_DIR = Path(_WORKDIR.name) / "config"
_CONFIG_DIR.mkdir()
write_demo_config(_CONFIG_DIR)
BROKER, _, _ = memory_broker(_CONFIG_DIR)
# The rate limit has its own tests; here it would only turn later examples into 429s.
BROKER.settings = BROKER.settings.model_copy(update={"rate_limit_per_minute": 0})
TOKEN = DevIssuer(_CONFIG_DIR / "keys").workload_token(
    BROKER.config, "demo-pipeline", ttl_seconds=3600
)
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def without_lifespan(app: ASGIApp) -> ASGIApp:
    """The app minus its lifespan: no metrics collector or config watcher left behind."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return wrapped


# /readyz answers 503 by design here: the memory broker has no OpenBao to reach.
schema = from_asgi("/openapi.json", without_lifespan(create_app(broker=BROKER))).exclude(
    path="/readyz"
)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case: schemathesis.Case) -> None:
    """Pass: every generated request, valid or not, is answered without a 5xx."""
    case.call_and_validate(headers=HEADERS, checks=[not_a_server_error])
