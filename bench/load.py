"""Load generator for the benchmarks, run in a child process (its own GIL) so that the client
threads do not compete with the in-process uvicorn server for the interpreter."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import hvac

Call = Callable[[], Any]


def _drive(
    make_call: Callable[[int], Call], concurrency: int, count: int, seconds: float
) -> dict[str, Any]:
    """`count` calls (or `seconds` of them) over `concurrency` threads, one client each."""
    calls = [make_call(i) for i in range(concurrency)]
    ticket = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    results: list[Any] = []
    errors: list[str] = []
    start = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker(index: int) -> None:
        mine: list[float] = []
        found: list[Any] = []
        start.wait()
        while next(ticket) < count and time.perf_counter() < deadline[0]:
            began = time.perf_counter()
            try:
                found.append(calls[index]())
            except Exception as exc:  # noqa: BLE001 - count it, keep the load going
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)
            results.extend(found)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    return {
        "wall_seconds": time.perf_counter() - began,
        "latencies": latencies,
        "results": results,
        "errors": errors[:5],
        "error_count": len(errors),
    }


def broker_grants(
    url: str, auth: dict[str, str], task_ids: list[str], body: dict[str, Any], count: int
) -> dict[str, Any]:
    """POST /v1/tasks/{id}/grants: one task and one HTTP client per thread."""

    def make_call(index: int) -> Call:
        client = httpx.Client(base_url=url, headers=auth, timeout=30)
        path = f"/v1/tasks/{task_ids[index]}/grants"

        def call() -> str:
            response = client.post(path, json=body)
            if response.status_code != 201:
                raise RuntimeError(f"{response.status_code} {response.text[:120]}")
            return str(response.json()["grant_id"])

        return call

    return _drive(make_call, len(task_ids), count, 600)


def bao_db(
    addr: str, token: str, role: str, ttl: int, concurrency: int, count: int
) -> dict[str, Any]:
    """What the database engine does: read creds, then renew the lease down to the grant TTL."""

    def make_call(_: int) -> Call:
        client = hvac.Client(url=addr, token=token, timeout=30)

        def call() -> str:
            lease_id = str(client.read(f"database/creds/{role}")["lease_id"])
            client.sys.renew_lease(lease_id=lease_id, increment=ttl)
            return lease_id

        return call

    return _drive(make_call, concurrency, count, 600)


def bao_token(
    addr: str, token: str, role: str, ttl: int, concurrency: int, count: int
) -> dict[str, Any]:
    """What the token engine does: create a token against the role with the grant TTL."""

    def make_call(_: int) -> Call:
        client = hvac.Client(url=addr, token=token, timeout=30)

        def call() -> str:
            created = client.write(
                f"auth/token/create/{role}", ttl=f"{ttl}s", explicit_max_ttl=f"{ttl}s"
            )
            return str(created["auth"]["accessor"])

        return call

    return _drive(make_call, concurrency, count, 600)
