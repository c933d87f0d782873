"""`jitbroker audit`: verify the hash chain, sign a checkpoint, export records for a SIEM."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TextIO

import httpx
import redis
import typer

from jitbroker.audit.chain import ChainReport, split_file_lines, verify_chain
from jitbroker.audit.log import build_audit_log
from jitbroker.audit.repository import AuditStream
from jitbroker.cli.receipts import public_keys
from jitbroker.config import Settings
from jitbroker.errors import StateUnavailable
from jitbroker.redis_client import connect_redis
from jitbroker.signing import BrokerSigningKey

audit_app = typer.Typer(
    no_args_is_help=True, help="Verify, checkpoint and export the tamper-evident audit trail."
)

RedisOption = Annotated[
    str | None,
    typer.Option("--redis", help="Redis URL [default: JITBROKER_REDIS_URL]", show_default=False),
]
PrefixOption = Annotated[
    str | None,
    typer.Option("--prefix", help="Key prefix [default: JITBROKER_KEY_PREFIX]", show_default=False),
]
FileOption = Annotated[
    Path | None,
    typer.Option("--file", help="Read this audit JSON-lines file instead of Redis"),
]
CSV_COLUMNS = (
    "seq",
    "time",
    "type",
    "outcome",
    "workload",
    "task_id",
    "grant_id",
    "profile",
    "rule",
    "reason",
    "source_ip",
    "user_agent",
    "jti",
    "details",
    "id",
    "prev_hash",
    "hash",
)


def redis_client(url: str) -> redis.Redis:
    """The Redis client the commands use (tests substitute an in-memory one)."""
    return connect_redis(url, socket_timeout=10, socket_connect_timeout=10)


client_factory: Callable[[str], redis.Redis] = redis_client


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


@audit_app.command("verify")
def verify(
    redis_url: RedisOption = None,
    prefix: PrefixOption = None,
    file: FileOption = None,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="The broker's JWKS (GET /v1/keys) or its PEM key "
            "[default: JITBROKER_SIGNING_KEY_FILE]",
            show_default=False,
        ),
    ] = None,
    api: Annotated[
        str | None, typer.Option("--api", help="Fetch the public key from this broker")
    ] = None,
) -> None:
    """Walk the chain; exit 0 if intact, 1 naming the first altered, removed or reordered record."""
    settings = Settings()
    try:
        keys = _verification_keys(settings, key_file, api)
        if file is not None:
            source = str(file)
            records, checkpoints = split_file_lines(file.read_text(encoding="utf-8").splitlines())
            report = verify_chain(records, checkpoints=checkpoints, keys=keys)
        else:
            stream = _stream(settings, redis_url, prefix)
            source = f"{redis_url or settings.redis_url} {stream.stream_key}"
            # Checkpoints and head first: everything they vouch for is then in the records read.
            checkpoints = stream.checkpoints()
            head = stream.current_head()
            records = list(stream.all_records())
            report = verify_chain(
                records, checkpoints=checkpoints, keys=keys, head=(head.seq, head.hash)
            )
    except (OSError, ValueError, httpx.HTTPError, StateUnavailable) as exc:
        typer.echo(f"cannot verify: {getattr(exc, 'detail', exc)}", err=True)
        raise typer.Exit(2) from None
    _print_report(source, report)
    raise typer.Exit(0 if report.intact else 1)


@audit_app.command("checkpoint")
def checkpoint() -> None:
    """Sign the chain's current head with the broker key, now (Redis and the audit file)."""
    settings = Settings()
    if not settings.signing_key_file.exists():
        typer.echo(f"no broker signing key at {settings.signing_key_file}", err=True)
        raise typer.Exit(2)
    audit = build_audit_log(
        settings,
        client_factory(settings.redis_url),
        signing_key=BrokerSigningKey.load_or_create(settings.signing_key_file),
    )
    try:
        signed = audit.checkpoint()
    except (redis.RedisError, ValueError) as exc:
        typer.echo(f"cannot checkpoint: {exc}", err=True)
        raise typer.Exit(2) from None
    if signed is None:
        typer.echo("the audit chain is empty: nothing to checkpoint")
        return
    typer.echo(f"checkpoint seq {signed['seq']} hash {signed['hash']} signed by {signed['key_id']}")


@audit_app.command("export")
def export(
    since: Annotated[
        str | None, typer.Option("--since", help="ISO time, e.g. 2025-01-31T00:00:00Z")
    ] = None,
    output_format: Annotated[
        ExportFormat, typer.Option("--format", help="jsonl (records as stored) or csv")
    ] = ExportFormat.jsonl,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write here instead of stdout")
    ] = None,
    redis_url: RedisOption = None,
    prefix: PrefixOption = None,
    file: FileOption = None,
) -> None:
    """Write the audit records since a time as JSON lines or CSV, for SIEM ingestion."""
    settings = Settings()
    try:
        start = _aware(datetime.fromisoformat(since)) if since else None
    except ValueError:
        typer.echo(f"--since {since!r} is not an ISO 8601 time", err=True)
        raise typer.Exit(2) from None
    try:
        if file is not None:
            records, _ = split_file_lines(file.read_text(encoding="utf-8").splitlines())
        else:
            records = list(_stream(settings, redis_url, prefix).all_records())
        selected = [r.document for r in records if r.document and _since(r.document, start)]
        if output is None:
            _write(selected, output_format, typer.get_text_stream("stdout"))
        else:
            with output.open("w", encoding="utf-8", newline="") as target:
                _write(selected, output_format, target)
    except (OSError, StateUnavailable) as exc:
        typer.echo(f"cannot export: {getattr(exc, 'detail', exc)}", err=True)
        raise typer.Exit(2) from None
    if output is not None:
        typer.echo(f"{len(selected)} records written to {output}", err=True)


def _stream(settings: Settings, redis_url: str | None, prefix: str | None) -> AuditStream:
    return AuditStream(
        client_factory(redis_url or settings.redis_url), prefix or settings.key_prefix
    )


def _verification_keys(
    settings: Settings, key_file: Path | None, api: str | None
) -> list[dict[str, str]]:
    """The broker's public keys: a JWKS file, a PEM key file, or a broker's /v1/keys."""
    if api is not None:
        return public_keys(None, api)
    path = key_file or settings.signing_key_file
    if not path.exists():
        raise ValueError(f"no key at {path}: give --key FILE or --api URL")
    if path.read_bytes().lstrip().startswith(b"-----BEGIN"):
        return [BrokerSigningKey.load_or_create(path).public_jwk()]
    return public_keys(path, None)


def _print_report(source: str, report: ChainReport) -> None:
    span = f"seq 1..{report.last_seq}" if report.last_seq else "empty"
    typer.echo(
        f"{source}: {_count(report.records, 'record')} in the chain ({span}), "
        f"{_count(report.checkpoints_verified, 'signed checkpoint')} verified"
    )
    if report.unchained:
        typer.echo(
            f"note: {len(report.unchained)} records outside the chain (written while Redis "
            f"was unreachable, or before the chain began): {', '.join(report.unchained[:10])}"
        )
    if report.intact:
        typer.echo("INTACT")
        return
    first, *others = report.problems
    typer.echo(f"TAMPERED {first}")
    for problem in others:
        typer.echo(f"also     {problem}")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _since(record: dict[str, Any], start: datetime | None) -> bool:
    if start is None:
        return True
    try:
        return _aware(datetime.fromisoformat(str(record.get("time")))) >= start
    except ValueError:
        return True


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _write(records: Iterable[dict[str, Any]], output_format: ExportFormat, target: TextIO) -> None:
    if output_format == ExportFormat.jsonl:
        for record in records:
            target.write(json.dumps(record, separators=(",", ":")) + "\n")
        return
    writer = csv.writer(target)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(_csv_rows(records))


def _csv_rows(records: Iterable[dict[str, Any]]) -> Iterator[list[str]]:
    for record in records:
        context = record.get("context") or {}
        flat = {**record, **{k: context.get(k) for k in ("source_ip", "user_agent", "jti")}}
        flat["details"] = json.dumps(record.get("details") or {}, sort_keys=True)
        yield ["" if flat.get(c) is None else str(flat[c]) for c in CSV_COLUMNS]
