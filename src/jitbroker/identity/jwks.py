"""An issuer's public keys: from a JWKS file or URL, cached, refreshed on an unknown kid."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 256 * 1024


class KeySet(Protocol):
    def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key for `kid` (or the only key when the token has no kid), else None."""


def parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """Public signing keys of a JWKS document by kid; private or unusable keys are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("JWKS document must be an object with a 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for index, raw in enumerate(document["keys"]):
        if not isinstance(raw, dict) or "d" in raw or raw.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(raw)
        except (jwt.PyJWKError, jwt.InvalidKeyError, KeyError, ValueError):
            log.warning("skipping unusable JWKS key #%d", index)
            continue
        keys[str(raw.get("kid", f"#{index}"))] = key
    return keys


def _pick(keys: dict[str, jwt.PyJWK], kid: str | None) -> jwt.PyJWK | None:
    if kid is not None:
        return keys.get(kid)
    return next(iter(keys.values())) if len(keys) == 1 else None


class FileKeySet:
    """Keys read from a local JWKS file, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._lock = threading.Lock()

    def key(self, kid: str | None) -> jwt.PyJWK | None:
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime
                if mtime != self._mtime:
                    self._keys = parse_jwks(json.loads(self.path.read_text(encoding="utf-8")))
                    self._mtime = mtime
            except (OSError, ValueError) as exc:
                log.warning("cannot read JWKS file %s: %s", self.path, exc)
            return _pick(self._keys, kid)

    def known_key(self, kid: str | None) -> jwt.PyJWK | None:
        """`key(kid)` when the file is unchanged and nobody holds the lock (one stat, no read),
        else None: for callers that must not block, e.g. on the event loop."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._mtime is None or self.path.stat().st_mtime != self._mtime:
                return None
            return _pick(self._keys, kid)
        except OSError:
            return None
        finally:
            self._lock.release()


class RemoteKeySet:
    """Keys from a JWKS URL: cached, refreshed when stale or on an unknown kid, rate-limited."""

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float = 300.0,
        min_refresh_seconds: float = 10.0,
        timeout_seconds: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self.cache_seconds = cache_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self._clock = clock
        self._timeout = timeout_seconds
        self._http = httpx.Client(timeout=timeout_seconds, transport=transport)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = threading.Lock()

    def key(self, kid: str | None) -> jwt.PyJWK | None:
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self.cache_seconds
            found = _pick(self._keys, kid)
            if (stale or found is None) and self._may_fetch(now):
                self._refresh(now)
                found = _pick(self._keys, kid)
            return found

    def known_key(self, kid: str | None) -> jwt.PyJWK | None:
        """`key(kid)` when that needs no fetch and nobody holds the lock (a fetch can take
        seconds), else None: for callers that must not block, e.g. on the event loop."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self.cache_seconds
            found = _pick(self._keys, kid)
            if (stale or found is None) and self._may_fetch(now):
                return None
            return found
        finally:
            self._lock.release()

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.min_refresh_seconds

    def _refresh(self, now: float) -> None:
        self._attempted_at = now
        try:
            document = json.loads(self._fetch())
            keys = parse_jwks(document)
            if not keys and document["keys"]:
                # Keys listed but none usable is a broken publisher, not a rotation to nothing.
                raise ValueError("JWKS lists keys but none is a usable signing key")
        except (httpx.HTTPError, ValueError) as exc:
            # Keep serving the keys we have: a JWKS outage must not lock out every workload.
            log.warning("JWKS refresh from %s failed: %s", self.url, exc)
            return
        self._keys = keys
        self._fetched_at = now

    def _fetch(self) -> bytes:
        """The JWKS body within one overall deadline and size cap: the lock is held meanwhile,
        and httpx's timeout is per read, so a server sending a byte at a time would hold every
        verification for this issuer."""
        deadline = time.monotonic() + self._timeout
        body = bytearray()
        with self._http.stream("GET", self.url, headers={"Accept": "application/json"}) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise ValueError(f"JWKS not received within {self._timeout}s")
        return bytes(body)
