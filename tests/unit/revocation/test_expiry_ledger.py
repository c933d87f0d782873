"""ExpiryLedger.members(): every entry, once, however many chunks it takes."""

from __future__ import annotations

import fakeredis

from jitbroker.revocation.ledger import ExpiryLedger


def test_members_lists_every_entry_once_across_chunks() -> None:
    ledger = ExpiryLedger(fakeredis.FakeRedis(), "jb:ledger")
    for number in range(25):
        ledger.schedule(f"grt_{number}", 1000.0 + number)

    members = list(ledger.members(chunk=4))

    assert sorted(members) == sorted(f"grt_{number}" for number in range(25))
    assert len(members) == 25


def test_members_of_an_empty_ledger_is_empty() -> None:
    assert list(ExpiryLedger(fakeredis.FakeRedis(), "jb:ledger").members()) == []
