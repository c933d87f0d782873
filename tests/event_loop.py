"""Run a coroutine on a fresh event loop in a thread of its own.

Playwright's sync API (the e2e fixture) keeps an event loop running in the main thread while
it is open, so async code in the e2e tests cannot start one there."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_in_fresh_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """The coroutine's result, or its exception, once it has run to the end."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-event-loop") as pool:
        return pool.submit(asyncio.run, coroutine).result()
