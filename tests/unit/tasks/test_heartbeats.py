"""Heartbeat deadlines over the memory broker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.unit.fakes import PIPELINE

from jitbroker.audit.events import RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.errors import Conflict, InvalidRequest
from jitbroker.tasks import service as tasks


def open_heartbeat_task(broker: Broker, seconds: int = 5) -> str:
    view = tasks.open_task(
        broker,
        workload=PIPELINE,
        purpose="ci",
        ttl_seconds=600,
        heartbeat_seconds=seconds,
        context=RequestContext(),
    )
    return view.task_id


def test_silent_task_is_completed_once_its_deadline_passes(broker: Broker) -> None:
    task_id = open_heartbeat_task(broker)
    later = broker.clock() + timedelta(seconds=6)
    broker.clock = lambda: later

    completed = tasks.complete_silent_tasks(broker)

    assert completed == [task_id]
    task = broker.tasks.get(task_id)
    assert task is not None
    assert task.state == "completed"


def test_task_that_beat_recently_is_not_completed(broker: Broker) -> None:
    task_id = open_heartbeat_task(broker)
    start = broker.clock()
    broker.clock = lambda: start + timedelta(seconds=4)
    tasks.record_heartbeat(broker, workload=PIPELINE, task_id=task_id)
    broker.heartbeats.schedule(task_id, 0)  # a stale claim: due in the ledger, not in truth
    broker.clock = lambda: start + timedelta(seconds=6)

    completed = tasks.complete_silent_tasks(broker)

    assert completed == []
    assert broker.heartbeats.due_at(task_id) == pytest.approx(
        (start + timedelta(seconds=9)).timestamp()
    )


def test_heartbeat_on_a_task_without_one_is_a_conflict(broker: Broker) -> None:
    view = tasks.open_task(
        broker, workload=PIPELINE, purpose="ci", ttl_seconds=60, context=RequestContext()
    )

    with pytest.raises(Conflict, match="without heartbeat_seconds"):
        tasks.record_heartbeat(broker, workload=PIPELINE, task_id=view.task_id)


def test_heartbeat_longer_than_the_task_is_rejected(broker: Broker) -> None:
    with pytest.raises(InvalidRequest, match="exceeds the task's ttl_seconds"):
        tasks.open_task(
            broker,
            workload=PIPELINE,
            purpose="ci",
            ttl_seconds=10,
            heartbeat_seconds=20,
            context=RequestContext(),
        )
