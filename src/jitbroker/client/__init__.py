"""The Python SDK: task-bound credentials from the broker, revoked when the task ends (README)."""

from jitbroker.client.async_broker import AsyncBroker, AsyncTask
from jitbroker.client.broker import Broker, Task
from jitbroker.client.credentials import Completion, Credential
from jitbroker.client.errors import (
    ApprovalRequired,
    ApprovalTimedOut,
    BrokerError,
    BrokerUnavailable,
    Denied,
    IdentityTokenUnavailable,
    Unauthenticated,
)
from jitbroker.client.flows import ApprovalStatus, RetryPolicy

__all__ = [
    "ApprovalRequired",
    "ApprovalStatus",
    "ApprovalTimedOut",
    "AsyncBroker",
    "AsyncTask",
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "Completion",
    "Credential",
    "Denied",
    "IdentityTokenUnavailable",
    "RetryPolicy",
    "Task",
    "Unauthenticated",
]
