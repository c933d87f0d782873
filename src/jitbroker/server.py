"""How `jitbroker serve` runs uvicorn: the app factory every server process calls, and uvicorn's
keyword options, all from Settings (one place for every server option)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from jitbroker.config import Settings, configure_logging
from jitbroker.connection_limits import ConnectionLimits, protocol_factory

# An import string, so that uvicorn can build the app in each worker process it starts.
APP_FACTORY = "jitbroker.server:served_app"


def served_app() -> FastAPI:
    """The API for one server process, from JITBROKER_* settings (uvicorn's app factory)."""
    from jitbroker.app import create_app

    settings = Settings()
    configure_logging(settings)
    return create_app(settings)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword options for `uvicorn.run(APP_FACTORY, ...)`."""
    return {
        "factory": True,
        "host": settings.listen_host,
        "port": settings.listen_port,
        "workers": settings.api_workers,
        "log_level": settings.log_level.lower(),
        "access_log": False,
        # httptools with deadlines for a request's head and body and a head size cap.
        "http": protocol_factory(ConnectionLimits.from_settings(settings)),
        # No websocket routes, and an upgrade would leave this protocol's deadline armed.
        "ws": "none",
    }
