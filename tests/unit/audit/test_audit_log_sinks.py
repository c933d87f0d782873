"""AuditLog over fakeredis and a file: one chain in both, tampering found in either, checkpoints,
concurrent writers, and sinks that fail without failing the decision."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import fakeredis
import pytest
from prometheus_client import REGISTRY
from tests.tampering import (
    delete_file_record,
    delete_stream_record,
    edit_file_record,
    edit_stream_record,
    stream_id_of,
    swap_file_records,
    swap_stream_records,
)
from tests.unit.audit.conftest import PREFIX, event, file_report, redis_report

from jitbroker.audit.chain import checkpoint_signature_problem
from jitbroker.audit.events import AuditEvent, RequestContext
from jitbroker.audit.log import AuditLog
from jitbroker.audit.repository import AuditStream
from jitbroker.signing import BrokerSigningKey

STREAM = f"{PREFIX}:audit"


def file_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_redis_and_file_hold_the_same_chain(twelve_records: AuditLog, audit_path: Path) -> None:
    in_redis = [e.document for e in twelve_records.stream.all_records()]
    in_file = [line for line in file_lines(audit_path) if line["type"] != "audit.checkpoint"]

    assert in_redis == in_file
    assert [r["seq"] for r in in_file] == list(range(1, 13))


def test_untouched_log_verifies_in_redis_and_in_the_file(
    twelve_records: AuditLog, audit_path: Path, signing_key: BrokerSigningKey
) -> None:
    in_redis = redis_report(twelve_records, signing_key)
    in_file = file_report(audit_path, signing_key)

    assert in_redis.intact, in_redis.problems
    assert in_file.intact, in_file.problems
    assert in_redis.checkpoints_verified == in_file.checkpoints_verified == 2


def test_checkpoint_is_signed_every_n_records(
    twelve_records: AuditLog, audit_path: Path, signing_key: BrokerSigningKey
) -> None:
    in_redis = [e.document for e in twelve_records.stream.checkpoints()]
    in_file = [line for line in file_lines(audit_path) if line["type"] == "audit.checkpoint"]
    records = {
        e.document["seq"]: e.document for e in twelve_records.stream.all_records() if e.document
    }

    assert in_redis == in_file
    assert [c["seq"] for c in in_file] == [5, 10]
    for checkpoint in in_file:
        assert checkpoint["hash"] == records[checkpoint["seq"]]["hash"]
        assert checkpoint_signature_problem(checkpoint, [signing_key.public_jwk()]) is None


def test_edited_redis_record_is_reported_at_its_seq_and_stream_id(
    twelve_records: AuditLog, audit_redis: fakeredis.FakeRedis, signing_key: BrokerSigningKey
) -> None:
    edit_stream_record(audit_redis, STREAM, 7, outcome="deny")

    report = redis_report(twelve_records, signing_key)

    first = report.problems[0]
    assert (first.kind, first.seq) == ("altered", 7)
    assert first.position == stream_id_of(audit_redis, STREAM, 7)


def test_deleted_redis_record_is_reported_as_removed(
    twelve_records: AuditLog, audit_redis: fakeredis.FakeRedis, signing_key: BrokerSigningKey
) -> None:
    following = stream_id_of(audit_redis, STREAM, 8)
    delete_stream_record(audit_redis, STREAM, 7)

    first = redis_report(twelve_records, signing_key).problems[0]

    assert (first.kind, first.seq, first.position) == ("removed", 7, following)


def test_swapped_redis_records_are_reported_as_reordered(
    twelve_records: AuditLog, audit_redis: fakeredis.FakeRedis, signing_key: BrokerSigningKey
) -> None:
    slot_of_seven = stream_id_of(audit_redis, STREAM, 7)
    swap_stream_records(audit_redis, STREAM, 7, 8)

    first = redis_report(twelve_records, signing_key).problems[0]

    assert (first.kind, first.seq, first.position) == ("reordered", 8, slot_of_seven)


def test_deleted_last_redis_record_is_caught_by_the_head(
    twelve_records: AuditLog, audit_redis: fakeredis.FakeRedis, signing_key: BrokerSigningKey
) -> None:
    delete_stream_record(audit_redis, STREAM, 12)

    first = redis_report(twelve_records, signing_key).problems[0]

    assert (first.kind, first.seq) == ("removed", 12)


def test_edited_file_line_is_reported_at_its_seq_and_line(
    twelve_records: AuditLog, audit_path: Path, signing_key: BrokerSigningKey
) -> None:
    line = edit_file_record(audit_path, 3, workload="someone-else")

    first = file_report(audit_path, signing_key).problems[0]

    assert (first.kind, first.seq, first.position) == ("altered", 3, f"line {line}")


def test_deleted_file_line_is_reported_as_removed(
    twelve_records: AuditLog, audit_path: Path, signing_key: BrokerSigningKey
) -> None:
    delete_file_record(audit_path, 3)

    first = file_report(audit_path, signing_key).problems[0]

    assert (first.kind, first.seq, first.position) == ("removed", 3, "line 3")


def test_swapped_file_lines_are_reported_as_reordered(
    twelve_records: AuditLog, audit_path: Path, signing_key: BrokerSigningKey
) -> None:
    swap_file_records(audit_path, 3, 4)

    first = file_report(audit_path, signing_key).problems[0]

    assert (first.kind, first.seq, first.position) == ("reordered", 4, "line 3")


def test_altered_checkpoint_in_the_file_fails_verification(
    twelve_records: AuditLog, audit_path: Path, signing_key: BrokerSigningKey
) -> None:
    lines = audit_path.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if "audit.checkpoint" in line)
    lines[index] = json.dumps({**json.loads(lines[index]), "time": "2001-01-01T00:00:00Z"})
    audit_path.write_text("\n".join(lines) + "\n")

    (problem,) = file_report(audit_path, signing_key).problems

    assert (problem.kind, problem.seq) == ("checkpoint", 5)


def test_stale_writer_retries_on_the_new_head_instead_of_forking(
    make_audit_log: Callable[[], AuditLog], signing_key: BrokerSigningKey
) -> None:
    api, worker = make_audit_log(), make_audit_log()
    api.record(event(1))
    worker.record(event(2))

    third = api.record(event(3))  # api's idea of the head is one record behind

    assert third is not None
    assert third["seq"] == 3
    assert redis_report(api, signing_key).intact


def test_concurrent_writers_keep_one_chain(
    make_audit_log: Callable[[], AuditLog], audit_path: Path, signing_key: BrokerSigningKey
) -> None:
    writers = [make_audit_log(), make_audit_log()]
    start = threading.Barrier(len(writers))

    def append_many(log: AuditLog) -> None:
        start.wait()
        for number in range(60):
            log.record(event(number))

    threads = [threading.Thread(target=append_many, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    in_redis = redis_report(writers[0], signing_key)
    in_file = file_report(audit_path, signing_key)
    assert in_redis.intact, in_redis.problems
    assert in_file.intact, in_file.problems
    assert in_redis.last_seq == in_file.last_seq == 120


def test_concurrent_writers_on_other_hosts_keep_one_chain(
    audit_redis: fakeredis.FakeRedis, signing_key: BrokerSigningKey
) -> None:
    # No shared file, so no lock between them: only the conditional append keeps them in line.
    writers = [AuditLog(AuditStream(audit_redis, PREFIX), stdout=None) for _ in range(3)]
    start = threading.Barrier(len(writers))

    def append_many(log: AuditLog) -> None:
        start.wait()
        for number in range(60):
            log.record(event(number))

    threads = [threading.Thread(target=append_many, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    report = redis_report(writers[0], signing_key)
    assert report.intact, report.problems
    assert report.last_seq == 180


def test_redis_failure_is_logged_counted_and_does_not_raise(
    audit_path: Path, signing_key: BrokerSigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    log = AuditLog(
        AuditStream(fakeredis.FakeRedis(server=server), PREFIX),
        file=audit_path,
        stdout=None,
        signing_key=signing_key,
    )
    before = REGISTRY.get_sample_value("jitbroker_audit_sink_failures_total", {"sink": "redis"})

    with caplog.at_level(logging.ERROR, logger="jitbroker.audit.log"):
        chained = log.record(event(1))

    after = REGISTRY.get_sample_value("jitbroker_audit_sink_failures_total", {"sink": "redis"})
    assert chained is None
    assert (after or 0) - (before or 0) == 1
    assert "NOT chained in Redis" in caplog.text
    (line,) = file_lines(audit_path)
    assert "seq" not in line  # kept in the file, marked as outside the chain
    assert file_report(audit_path, signing_key).unchained == ["line 1"]


def test_unwritable_audit_file_does_not_fail_the_event(
    audit_redis: fakeredis.FakeRedis, tmp_path: Path, signing_key: BrokerSigningKey
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    log = AuditLog(
        AuditStream(audit_redis, PREFIX),
        file=blocker / "audit.jsonl",
        stdout=None,
        signing_key=signing_key,
    )

    chained = log.record(event(1))

    assert chained is not None
    assert chained["seq"] == 1


def test_whole_tokens_never_reach_the_log(audit_log: AuditLog, audit_path: Path) -> None:
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJkZW1vIn0.c2lnbmF0dXJl"
    vault_token = "hvs.CAESIJ2mDs0aRbGEn9UuJ5MTzJL0"
    audit_log.record(
        AuditEvent(
            type="auth.failed",
            outcome="rejected",
            reason=f"bad token {jwt}",
            context=RequestContext(user_agent=f"curl {vault_token}"),
            details={"presented": [jwt]},
        )
    )

    stored = audit_path.read_text() + json.dumps(
        [e.document for e in audit_log.stream.all_records()]
    )
    assert jwt not in stored
    assert vault_token not in stored
    assert "[redacted]" in stored


def test_records_of_a_task_are_indexed(audit_log: AuditLog) -> None:
    for number in range(3):
        audit_log.record(event(number, task_id="tsk_a"))
        audit_log.record(event(number, task_id="tsk_b"))

    records = audit_log.stream.task_records("tsk_a")

    assert [e.document["seq"] for e in records if e.document] == [1, 3, 5]
