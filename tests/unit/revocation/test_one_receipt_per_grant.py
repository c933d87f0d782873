"""Two revocations of one grant carried out at once (duplicate messages, two sweepers) store one
receipt, and the terminal audit event names that receipt."""

from __future__ import annotations

from typing import Any

import pytest

from jitbroker.bootstrap import Broker
from jitbroker.errors import StateUnavailable
from jitbroker.grants.schemas import GrantRecord, GrantState, RevokeReason
from jitbroker.revocation import service
from jitbroker.revocation.receipts import ReceiptCheck
from jitbroker.revocation.service import request_revocation, revoke_grant


def test_a_second_carry_out_keeps_the_first_receipt_and_the_audit_names_it(
    broker: Broker, issued_grant: GrantRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant_id = issued_grant.grant_id
    request_revocation(broker, grant_id=grant_id, reason=RevokeReason.task_completed)
    real_replace = broker.grants.replace

    def terminal_write_lost(grant: GrantRecord, **kwargs: Any) -> bool:
        if grant.state == GrantState.revoked:
            raise StateUnavailable("the other worker is slower to write")
        return real_replace(grant, **kwargs)

    def first_attempts_checks(broker: Broker, grant: GrantRecord) -> list[ReceiptCheck]:
        marker = ReceiptCheck(name="first-attempt", status="passed", detail="only the first")
        return [*real_verify(broker, grant), marker]

    # The first worker stores its receipt, then loses the race to write the terminal state.
    real_verify = service.verify_revoked
    monkeypatch.setattr(broker.grants, "replace", terminal_write_lost)
    monkeypatch.setattr(service, "verify_revoked", first_attempts_checks)
    with pytest.raises(StateUnavailable):
        revoke_grant(broker, grant_id=grant_id)
    first = broker.receipts.get(grant_id)
    monkeypatch.undo()

    revoked = revoke_grant(broker, grant_id=grant_id)

    assert first is not None
    assert revoked is not None
    assert revoked.state == GrantState.revoked
    assert broker.receipts.get(grant_id) == first
    assert revoked.revoked_at == first.revoked_at
    (event,) = [e for e in broker.audit.read_all() if e.type == "grant.revoked"]
    assert event.details["receipt_signature"] == first.signature
    # The event describes that receipt's attempt, not a mix of both.
    assert event.details["checks"] == {c.name: c.status for c in first.checks}
    assert event.details["checks"]["first-attempt"] == "passed"
    assert event.details["revocation_seconds"] == first.duration_ms / 1000
