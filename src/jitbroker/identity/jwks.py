"""An issuer's public keys: from a JWKS file or URL, cached, refreshed on an unknown kid."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
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

    def known_key(self, kid: str | None) -> jwt.PyJWK | None:
        """`key(kid)` if it can be answered without I/O or waiting, else None."""


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
    """Keys from a JWKS URL: cached, refreshed when stale or on an unknown kid, rate-limited.

    The lock only guards the fields below and is never held across I/O. One refresh runs at a
    time, in a worker thread that the caller which triggered it waits on for at most
    `timeout_seconds` in all (connect, headers, body): other callers answer from the cached
    keys meanwhile, so an unknown kid then fails closed at once. On that deadline the caller
    shuts the fetch's socket down, so a server that trickles its answer cannot keep the worker,
    and with it the one refresh slot, for longer."""

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
        # No keep-alive: each fetch opens its own connection, whose socket `_Fetch` can shut.
        limits = httpx.Limits(max_keepalive_connections=0)
        self._http = httpx.Client(timeout=timeout_seconds, limits=limits, transport=transport)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._refreshing = False
        self._lock = threading.Lock()

    def key(self, kid: str | None) -> jwt.PyJWK | None:
        with self._lock:
            now = self._clock()
            found = _pick(self._keys, kid)
            if self._refreshing or not self._wants_refresh(now, found):
                return found
            self._refreshing = True
            self._attempted_at = now
        fetch = _Fetch()
        worker = threading.Thread(
            target=self._refresh, args=(now, fetch), name="jwks-refresh", daemon=True
        )
        try:
            worker.start()
        except RuntimeError:  # no thread to be had: try again on a later call
            with self._lock:
                self._refreshing = False
            return found
        worker.join(self._timeout)
        if worker.is_alive():
            log.warning("JWKS refresh from %s not done within %ss", self.url, self._timeout)
            fetch.abort()
        with self._lock:
            return _pick(self._keys, kid)

    def known_key(self, kid: str | None) -> jwt.PyJWK | None:
        """`key(kid)` when that needs no fetch, else None: for callers that must not block,
        e.g. on the event loop (the lock is never held across I/O)."""
        with self._lock:
            found = _pick(self._keys, kid)
            if self._refreshing or not self._wants_refresh(self._clock(), found):
                return found
            return None

    def _wants_refresh(self, now: float, found: jwt.PyJWK | None) -> bool:
        stale = self._fetched_at is None or now - self._fetched_at >= self.cache_seconds
        may = self._attempted_at is None or now - self._attempted_at >= self.min_refresh_seconds
        return (stale or found is None) and may

    def _refresh(self, now: float, fetch: _Fetch) -> None:
        """The worker: fetch and parse without the lock, then install the keys under it."""
        keys: dict[str, jwt.PyJWK] | None = None
        try:
            document = json.loads(self._fetch(fetch))
            parsed = parse_jwks(document)
            if not parsed and document["keys"]:
                # Keys listed but none usable is a broken publisher, not a rotation to nothing.
                raise ValueError("JWKS lists keys but none is a usable signing key")
            keys = parsed
        except (httpx.HTTPError, ValueError, RecursionError) as exc:
            # Keep serving the keys we have: a JWKS outage must not lock out every workload.
            log.warning("JWKS refresh from %s failed: %s", self.url, exc)
        finally:
            fetch.close()
            with self._lock:
                self._refreshing = False
                if keys is not None:
                    self._keys, self._fetched_at = keys, now

    def _fetch(self, fetch: _Fetch) -> bytes:
        """The JWKS body, uncompressed (a gzip bomb would inflate before any size check), within
        the size cap and, between chunks, the deadline (the caller's abort covers the rest)."""
        deadline = time.monotonic() + self._timeout
        body = bytearray()
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        extensions = {"trace": fetch.trace}
        with self._http.stream("GET", self.url, headers=headers, extensions=extensions) as response:
            response.raise_for_status()
            if response.headers.get("Content-Encoding", "identity").lower() != "identity":
                raise ValueError("JWKS sent compressed although asked for identity")
            for chunk in response.iter_bytes():  # identity: nothing to decode
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise ValueError(f"JWKS not received within {self._timeout}s")
        return bytes(body)


class _Fetch:
    """One fetch's connection, seen through httpcore's trace hook, which `abort` shuts down
    from another thread: the worker's blocking read (handshake, headers or body) ends at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._aborted = False

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            with self._lock:
                # A duplicate: shutting it down ends the connection, and TLS, which detaches
                # the original socket object, leaves it alone.
                self._socket = info["return_value"].get_extra_info("socket").dup()
                if self._aborted:
                    self._shut()

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            self._shut()

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def _shut(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
