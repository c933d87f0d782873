"""The pure chain: how records link, and what verification reports for each kind of tampering."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jitbroker.audit.chain import (
    GENESIS_HASH,
    ChainEntry,
    chained,
    checkpoint_signature_problem,
    record_hash,
    signed_checkpoint,
    verify_chain,
)
from jitbroker.signing import BrokerSigningKey

NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


def build_chain(length: int) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    prev = GENESIS_HASH
    for seq in range(1, length + 1):
        record = chained({"type": "task.opened", "n": seq}, seq=seq, prev_hash=prev)
        records.append(record)
        prev = record["hash"]
    return records


def entries(records: list[dict[str, Any]]) -> list[ChainEntry]:
    return [ChainEntry(f"line {i}", dict(r)) for i, r in enumerate(records, start=1)]


def test_each_record_links_to_the_hash_of_the_one_before() -> None:
    records = build_chain(4)

    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert records[0]["prev_hash"] == GENESIS_HASH
    for before, after in zip(records, records[1:], strict=False):
        assert after["prev_hash"] == before["hash"]


def test_record_hash_is_sha256_of_prev_hash_and_canonical_json() -> None:
    (record,) = build_chain(1)
    body = '{"n":1,"prev_hash":"' + GENESIS_HASH + '","seq":1,"type":"task.opened"}'

    assert record["hash"] == hashlib.sha256((GENESIS_HASH + body).encode()).hexdigest()
    assert record_hash(GENESIS_HASH, record) == record["hash"]


def test_untouched_chain_verifies() -> None:
    report = verify_chain(entries(build_chain(6)), head=(6, build_chain(6)[-1]["hash"]))

    assert report.intact
    assert (report.records, report.last_seq) == (6, 6)


def test_edited_record_is_named_by_its_seq_and_position() -> None:
    records = build_chain(6)
    records[3]["outcome"] = "allow"

    (problem,) = verify_chain(entries(records)).problems

    assert (problem.kind, problem.seq, problem.position) == ("altered", 4, "line 4")


def test_deleted_record_is_named_as_removed() -> None:
    records = build_chain(6)
    del records[2]

    (problem,) = verify_chain(entries(records)).problems

    assert (problem.kind, problem.seq, problem.position) == ("removed", 3, "line 3")
    assert "seq 3 missing" in problem.detail


def test_swapped_records_are_reported_as_reordered() -> None:
    records = build_chain(6)
    records[1], records[2] = records[2], records[1]

    (problem,) = verify_chain(entries(records)).problems

    assert (problem.kind, problem.seq, problem.position) == ("reordered", 3, "line 2")
    assert "stands before seq 2" in problem.detail


def test_record_rewritten_with_a_fresh_hash_is_named_by_the_next_link() -> None:
    records = build_chain(6)
    forged = chained({**records[2], "outcome": "forged"}, seq=3, prev_hash=records[1]["hash"])
    records[2] = forged

    (problem,) = verify_chain(entries(records)).problems

    assert (problem.kind, problem.seq, problem.position) == ("altered", 3, "line 3")


def test_removed_tail_is_caught_by_the_writer_head() -> None:
    records = build_chain(6)

    (problem,) = verify_chain(entries(records[:4]), head=(6, records[-1]["hash"])).problems

    assert (problem.kind, problem.seq) == ("removed", 5)


def test_records_outside_the_chain_are_listed_not_failed() -> None:
    records: list[dict[str, Any]] = [{"type": "auth.failed", "outcome": "rejected"}]
    records += build_chain(2)

    report = verify_chain(entries(records))

    assert report.intact
    assert report.unchained == ["line 1"]


def test_checkpoint_signature_verifies_with_the_broker_key(tmp_path: Path) -> None:
    key = BrokerSigningKey.load_or_create(tmp_path / "key.pem")
    checkpoint = signed_checkpoint(seq=6, chain_hash="ab" * 32, time=NOW, key=key)

    assert checkpoint_signature_problem(checkpoint, [key.public_jwk()]) is None
    assert set(checkpoint) == {"type", "seq", "hash", "time", "key_id", "signature"}


@pytest.mark.parametrize(("field", "value"), [("seq", 7), ("hash", "cd" * 32), ("time", "x")])
def test_altered_checkpoint_fails_verification(tmp_path: Path, field: str, value: Any) -> None:
    key = BrokerSigningKey.load_or_create(tmp_path / "key.pem")
    checkpoint = signed_checkpoint(seq=6, chain_hash="ab" * 32, time=NOW, key=key)

    problem = checkpoint_signature_problem({**checkpoint, field: value}, [key.public_jwk()])

    assert problem == "signature does not verify with the broker's public key"


def test_checkpoint_signed_by_another_key_fails(tmp_path: Path) -> None:
    key = BrokerSigningKey.load_or_create(tmp_path / "key.pem")
    other = BrokerSigningKey.load_or_create(tmp_path / "other.pem")
    checkpoint = signed_checkpoint(seq=6, chain_hash="ab" * 32, time=NOW, key=other)

    problem = checkpoint_signature_problem(checkpoint, [key.public_jwk()])

    assert problem is not None
    assert "not in the key set" in problem


def test_chain_rewritten_and_rehashed_from_the_start_is_caught_by_a_checkpoint(
    tmp_path: Path,
) -> None:
    key = BrokerSigningKey.load_or_create(tmp_path / "key.pem")
    original = build_chain(6)
    checkpoint = signed_checkpoint(seq=5, chain_hash=original[4]["hash"], time=NOW, key=key)
    forged, prev = [], GENESIS_HASH
    for record in original:
        body = {**record, "n": 99} if record["seq"] == 2 else record
        forged.append(chained(body, seq=record["seq"], prev_hash=prev))
        prev = forged[-1]["hash"]

    report = verify_chain(
        entries(forged),
        checkpoints=[ChainEntry("checkpoint 1", checkpoint)],
        keys=[key.public_jwk()],
    )

    (problem,) = report.problems
    assert (problem.kind, problem.seq) == ("altered", 5)
    assert "rewritten after seq 0" in problem.detail


def test_checkpoint_beyond_the_end_reveals_removed_records(tmp_path: Path) -> None:
    key = BrokerSigningKey.load_or_create(tmp_path / "key.pem")
    records = build_chain(6)
    checkpoint = signed_checkpoint(seq=6, chain_hash=records[5]["hash"], time=NOW, key=key)

    report = verify_chain(
        entries(records[:3]),
        checkpoints=[ChainEntry("checkpoint 1", checkpoint)],
        keys=[key.public_jwk()],
    )

    (problem,) = report.problems
    assert (problem.kind, problem.seq) == ("removed", 4)
