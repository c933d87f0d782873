"""`jitbroker audit verify | checkpoint | export` over fakeredis and the file."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import fakeredis
import pytest
from tests.tampering import edit_file_record, edit_stream_record, stream_id_of
from tests.unit.audit.conftest import PREFIX, event
from typer.testing import CliRunner

from jitbroker.audit.log import AuditLog
from jitbroker.cli import app as cli
from jitbroker.cli import audit as audit_cli
from jitbroker.signing import BrokerSigningKey

STREAM = f"{PREFIX}:audit"


@pytest.fixture(autouse=True)
def cli_environment(
    monkeypatch: pytest.MonkeyPatch,
    audit_redis: fakeredis.FakeRedis,
    audit_path: Path,
    signing_key: BrokerSigningKey,
    tmp_path: Path,
) -> None:
    """The CLI reads this fakeredis, prefix, audit file and key (as it would from the env)."""
    monkeypatch.setattr(audit_cli, "client_factory", lambda _url: audit_redis)
    monkeypatch.setenv("JITBROKER_KEY_PREFIX", PREFIX)
    monkeypatch.setenv("JITBROKER_AUDIT_FILE", str(audit_path))
    monkeypatch.setenv("JITBROKER_SIGNING_KEY_FILE", str(tmp_path / "broker-signing-key.pem"))


def test_verify_passes_on_an_untouched_log_in_redis(twelve_records: AuditLog) -> None:
    result = CliRunner().invoke(cli, ["audit", "verify"])

    assert result.exit_code == 0, result.output
    assert "12 records in the chain (seq 1..12), 2 signed checkpoints verified" in result.output
    assert result.output.rstrip().endswith("INTACT")


def test_verify_passes_on_an_untouched_file(twelve_records: AuditLog, audit_path: Path) -> None:
    result = CliRunner().invoke(cli, ["audit", "verify", "--file", str(audit_path)])

    assert result.exit_code == 0, result.output


def test_verify_exits_1_naming_the_edited_redis_record(
    twelve_records: AuditLog, audit_redis: fakeredis.FakeRedis
) -> None:
    edit_stream_record(audit_redis, STREAM, 9, reason="nothing to see")

    result = CliRunner().invoke(cli, ["audit", "verify"])

    assert result.exit_code == 1
    stream_id = stream_id_of(audit_redis, STREAM, 9)
    assert f"TAMPERED seq 9 ({stream_id}): altered" in result.output


def test_verify_exits_1_naming_the_edited_file_line(
    twelve_records: AuditLog, audit_path: Path
) -> None:
    line = edit_file_record(audit_path, 2, outcome="deny")

    result = CliRunner().invoke(cli, ["audit", "verify", "--file", str(audit_path)])

    assert result.exit_code == 1
    assert f"TAMPERED seq 2 (line {line}): altered" in result.output


def test_verify_checks_checkpoints_against_a_saved_jwks(
    twelve_records: AuditLog, signing_key: BrokerSigningKey, tmp_path: Path
) -> None:
    other = BrokerSigningKey.load_or_create(tmp_path / "other.pem")
    jwks = tmp_path / "keys.json"
    jwks.write_text(json.dumps({"keys": [other.public_jwk()]}))

    result = CliRunner().invoke(cli, ["audit", "verify", "--key", str(jwks)])

    assert result.exit_code == 1
    assert "not in the key set" in result.output


def test_verify_without_any_key_cannot_verify(
    twelve_records: AuditLog, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JITBROKER_SIGNING_KEY_FILE", str(tmp_path / "missing.pem"))

    result = CliRunner().invoke(cli, ["audit", "verify"])

    assert result.exit_code == 2
    assert "give --key FILE or --api URL" in result.output


def test_checkpoint_signs_the_current_head(
    twelve_records: AuditLog, audit_redis: fakeredis.FakeRedis
) -> None:
    head = twelve_records.stream.current_head()

    result = CliRunner().invoke(cli, ["audit", "checkpoint"])

    assert result.exit_code == 0, result.output
    assert f"checkpoint seq 12 hash {head.hash}" in result.output
    assert [e.document["seq"] for e in twelve_records.stream.checkpoints() if e.document] == [
        5,
        10,
        12,
    ]
    verified = CliRunner().invoke(cli, ["audit", "verify"])
    assert "3 signed checkpoints verified" in verified.output


def test_export_jsonl_writes_the_records_as_stored(
    twelve_records: AuditLog, tmp_path: Path
) -> None:
    target = tmp_path / "export.jsonl"

    result = CliRunner().invoke(cli, ["audit", "export", "--output", str(target)])

    assert result.exit_code == 0, result.output
    exported = [json.loads(line) for line in target.read_text().splitlines()]
    assert exported == [e.document for e in twelve_records.stream.all_records()]


def test_export_csv_has_one_row_per_record_with_the_request_context(
    twelve_records: AuditLog, audit_path: Path
) -> None:
    result = CliRunner().invoke(
        cli, ["audit", "export", "--format", "csv", "--file", str(audit_path)]
    )

    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert result.exit_code == 0, result.output
    assert [row["seq"] for row in rows] == [str(n) for n in range(1, 13)]
    assert {"source_ip", "user_agent", "jti", "hash"} <= set(rows[0])
    assert json.loads(rows[0]["details"]) == {"number": 1}


def test_export_since_leaves_out_older_records(audit_log: AuditLog) -> None:
    for day in range(1, 5):
        audit_log.record(event(day).model_copy(update={"time": datetime(2025, 1, day, tzinfo=UTC)}))

    result = CliRunner().invoke(cli, ["audit", "export", "--since", "2025-01-03T00:00:00Z"])

    exported = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["details"]["number"] for r in exported] == [3, 4]


def test_export_rejects_a_since_that_is_not_a_time(twelve_records: AuditLog) -> None:
    result = CliRunner().invoke(cli, ["audit", "export", "--since", "last tuesday"])

    assert result.exit_code == 2
