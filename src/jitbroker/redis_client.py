"""Redis connections from one URL: plain `redis://` or Sentinel-managed `redis+sentinel://`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis
import redis.asyncio
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    """`redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/master[/db][?sentinel_password=…]`"""

    sentinels: list[tuple[str, int]]
    master: str
    db: int
    username: str | None
    password: str | None
    sentinel_password: str | None

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """Parse a Sentinel URL; errors say which part is wrong."""
        parts = urlsplit(url)
        if parts.scheme != SENTINEL_SCHEME:
            raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
        credentials, _, hosts = parts.netloc.rpartition("@")
        username, _, password = credentials.partition(":")
        sentinels = []
        for host in hosts.split(","):
            name, _, port = host.strip().rpartition(":") if ":" in host else (host, "", "")
            if not name:
                raise ValueError(f"{SENTINEL_SCHEME}:// URL: empty sentinel host in {hosts!r}")
            sentinels.append((name, int(port) if port else DEFAULT_SENTINEL_PORT))
        path = [p for p in parts.path.split("/") if p]
        if not path or len(path) > 2:
            raise ValueError(f"{SENTINEL_SCHEME}:// URL: the path must be /<master name>[/<db>]")
        query = parse_qs(parts.query)
        return cls(
            sentinels=sentinels,
            master=unquote(path[0]),
            db=int(path[1]) if len(path) == 2 else 0,
            username=unquote(username) or None,
            password=unquote(password) or None,
            sentinel_password=next(iter(query.get("sentinel_password", [])), None),
        )


def connect_redis(url: str, **options: Any) -> redis.Redis:
    """A client for `url`; with `redis+sentinel://` it follows the master Sentinel names."""
    client: redis.Redis = _connect(url, redis.Redis, Sentinel, options)
    return client


def connect_async_redis(url: str, **options: Any) -> redis.asyncio.Redis:
    """An asyncio client for `url` (same URL forms as `connect_redis`); connects on first use."""
    client: redis.asyncio.Redis = _connect(url, redis.asyncio.Redis, AsyncSentinel, options)
    return client


def _connect(url: str, client_class: Any, sentinel_class: Any, options: dict[str, Any]) -> Any:
    """`client_class` for a plain URL, else the master that `sentinel_class` finds (either the
    blocking or the asyncio flavour of redis-py: they take the same arguments)."""
    if not url.startswith(f"{SENTINEL_SCHEME}://"):
        return client_class.from_url(url, **options)
    parsed = SentinelURL.parse(url)
    sentinel = sentinel_class(
        parsed.sentinels,
        sentinel_kwargs={
            "password": parsed.sentinel_password,
            "socket_timeout": options.get("socket_timeout", 5),
        },
        **options,
    )
    return sentinel.master_for(
        parsed.master, db=parsed.db, username=parsed.username, password=parsed.password
    )


def celery_broker(url: str) -> tuple[str, dict[str, Any]]:
    """The Celery (kombu) broker URL and transport options for `url`."""
    if not url.startswith(f"{SENTINEL_SCHEME}://"):
        return url, {}
    parsed = SentinelURL.parse(url)
    user = quote(parsed.username or "", safe="")
    auth = f"{user}:{quote(parsed.password, safe='')}@" if parsed.password else ""
    broker = ";".join(
        f"sentinel://{auth}{host}:{port}/{parsed.db}" for host, port in parsed.sentinels
    )
    options: dict[str, Any] = {"master_name": parsed.master}
    if parsed.sentinel_password:
        options["sentinel_kwargs"] = {"password": parsed.sentinel_password}
    return broker, options
