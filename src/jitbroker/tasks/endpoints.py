"""HTTP endpoints for tasks: parse, call one service function, shape the response."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from jitbroker.identity.dependencies import BrokerDep, ContextDep, WorkloadDep
from jitbroker.tasks import service
from jitbroker.tasks.schemas import CompletionView, OpenTaskRequest, TaskView

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TaskView)
def open_task(
    body: OpenTaskRequest, broker: BrokerDep, workload: WorkloadDep, context: ContextDep
) -> TaskView:
    """Open a task: the unit of work every credential is bound to."""
    return service.open_task(
        broker,
        workload=workload,
        purpose=body.purpose,
        ttl_seconds=body.ttl_seconds,
        heartbeat_seconds=body.heartbeat_seconds,
        context=context,
    )


@router.post("/{task_id}/heartbeat", response_model=TaskView)
def heartbeat(task_id: str, broker: BrokerDep, workload: WorkloadDep) -> TaskView:
    """Keep a heartbeat task alive; a missed beat completes it and revokes its grants."""
    return service.record_heartbeat(broker, workload=workload, task_id=task_id)


@router.get("/{task_id}", response_model=TaskView)
def get_task(task_id: str, broker: BrokerDep, workload: WorkloadDep) -> TaskView:
    """The task and its grants (never secrets); only its own workload may read it."""
    return service.describe_task(broker, workload=workload, task_id=task_id)


@router.post(
    "/{task_id}/complete",
    response_model=CompletionView,
    responses={202: {"description": "Completed; some revocations are still in progress"}},
)
def complete_task(
    task_id: str,
    response: Response,
    broker: BrokerDep,
    workload: WorkloadDep,
    context: ContextDep,
    wait: bool = False,
) -> CompletionView:
    """Complete the task and revoke every grant; `wait=true` returns once OpenBao confirms all."""
    completion = service.complete_task(
        broker, workload=workload, task_id=task_id, wait=wait, context=context
    )
    if completion.state != "completed":
        response.status_code = status.HTTP_202_ACCEPTED
    return completion
