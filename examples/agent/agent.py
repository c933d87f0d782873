"""An agent whose tool call gets a task credential just before it runs and loses it right after.

With `make run` in another terminal:

    export JITBROKER_TOKEN=$(.venv/bin/jitbroker dev token demo-pipeline)
    .venv/bin/python examples/agent/agent.py "What was ordered recently?"

The identity token comes from JITBROKER_TOKEN here; in a pod it would be the projected
service-account token, found the same way (`jitbroker.client.token_discovery`).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import psycopg

from jitbroker.client import Broker, BrokerError, Credential

log = logging.getLogger("agent")


@dataclass(frozen=True)
class ToolCall:
    """What the model asked to run: a tool, and why (the justification the approver sees)."""

    tool: str
    reason: str


def plan(question: str) -> ToolCall:
    """Stands in for the model: every question here needs the recent orders."""
    return ToolCall(tool="recent_orders", reason=f"answer the user's question: {question[:200]}")


def recent_orders(credential: Credential, limit: int = 5) -> list[str]:
    """The tool: reads the demo orders table with the task's read-only credential."""
    with psycopg.connect(credential.env()["DATABASE_URL"], connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT item FROM jitbroker_demo.orders ORDER BY id DESC LIMIT %s", (limit,)
        ).fetchall()
    return [str(row[0]) for row in rows]


def answer(broker: Broker, question: str) -> str:
    """Plan, run the tool with a credential scoped to it, then answer."""
    call = plan(question)
    # One task per tool call: the credential exists only while the tool runs, and the task is
    # completed (credential revoked, confirmed by the broker) even if the tool raises.
    with broker.task(f"agent tool call: {call.tool}", ttl=300, heartbeat=30) as task:
        credential = task.credential("demo-db", scopes=["read"], ttl=120, justification=call.reason)
        log.info("tool %s runs with %r", call.tool, credential)  # masked: password=***
        items = recent_orders(credential)
    log.info("task %s: %s", task.task_id, task.completion.state if task.completion else "-")
    return f"Recent orders: {', '.join(items) or 'none'}."


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    question = " ".join(sys.argv[1:]) or "What was ordered recently?"
    try:
        with Broker() as broker:  # JITBROKER_API, else http://127.0.0.1:8400
            print(answer(broker, question))
    except BrokerError as exc:
        log.error("no credential for the tool call: %s", exc.message)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
