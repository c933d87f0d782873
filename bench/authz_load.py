"""Load generator for the gateway-check benchmark: keep-alive HTTP/1.1 connections on one
asyncio event loop (uvloop when installed), as a gateway would hold them.

Why not httpx threads (bench/load.py): eight of them share one GIL and spend about 0.8 ms of client
CPU per request, so on a 2-vCPU machine they top out near 600-1,000 requests/s and add their own
GIL waits to every latency, whatever the server does. Gateways (Envoy, NGINX) are native code; this
client costs tens of microseconds per request, so the number measures the API process.

`authz_checks(url, body, concurrency, count, seconds)` -> {"wall_seconds", "latencies",
"results", "errors", "error_count"}, the shape of bench/load.py's runs; a request counts only
when it is answered 200. Also runnable by hand: `python -m bench.authz_load URL GRANT_ID`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

CHECK_PATH = "/v1/authz/check"


def check_request(host: str, port: int, body: dict[str, Any]) -> bytes:
    """The raw request a gateway would send, built once and written as-is on every call."""
    payload = json.dumps(body).encode()
    head = (
        f"POST {CHECK_PATH} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "\r\n"
    )
    return head.encode() + payload


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status code and body of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length) if length else b""


async def drive(
    url: str, body: dict[str, Any], concurrency: int, count: int, seconds: float
) -> dict[str, Any]:
    """`count` checks (or `seconds` of them) over `concurrency` keep-alive connections."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = check_request(host, port, body)
    connections = [await asyncio.open_connection(host, port) for _ in range(concurrency)]
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    deadline = 0.0

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal issued
        while issued < count and time.perf_counter() < deadline:
            issued += 1
            began = time.perf_counter()
            writer.write(request)
            try:
                status, answer = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                return  # the connection is unusable now
            if status != 200:
                errors.append(f"{status} {answer[:120]!r}")
                continue
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    deadline = began + seconds
    await asyncio.gather(*(connection(r, w) for r, w in connections))
    wall = time.perf_counter() - began
    for _, writer in connections:
        writer.close()
    return {
        "wall_seconds": wall,
        "latencies": latencies,
        "results": [1] * len(latencies),
        "errors": errors[:5],
        "error_count": len(errors),
    }


def _run(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


def authz_checks(
    url: str, body: dict[str, Any], concurrency: int, count: int, seconds: float
) -> dict[str, Any]:
    """POST /v1/authz/check for a live grant, as a gateway would."""
    return _run(drive(url, body, concurrency, count, seconds))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("grant_id")
    parser.add_argument("--destination", default="postgres://127.0.0.1:5432/postgres")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    options = parser.parse_args()
    check = {"destination": options.destination, "grant_id": options.grant_id}
    authz_checks(options.url, check, 2, 200, 5)  # warm-up, as the bench does
    run = authz_checks(options.url, check, options.concurrency, 1_000_000, options.seconds)
    ordered = sorted(run["latencies"])
    if not ordered:
        raise SystemExit(f"no answered checks: {run['errors']}")
    p50, p99 = (ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.99))
    summary = {
        "requests_per_second": round(len(ordered) / run["wall_seconds"], 1),
        "p50_ms": round(p50 * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "errors": run["error_count"],
    }
    print(json.dumps(summary))  # noqa: T201 - a command-line report
