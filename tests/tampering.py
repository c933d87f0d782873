"""What an attacker with write access does to the audit trail, in Redis and in the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

Entries = list[tuple[bytes, dict[bytes, bytes]]]


def _seq_of(fields: dict[bytes, bytes]) -> int:
    return int(json.loads(fields[b"event"])["seq"])


def rewrite_stream(client: redis.Redis, key: str, change: Callable[[Entries], Entries]) -> None:
    """Rebuild the stream with the same ids (XADD cannot write below the last id otherwise)."""
    entries: Entries = client.xrange(key)
    client.delete(key)
    for entry_id, fields in change(entries):
        client.xadd(key, fields, id=entry_id)


def stream_id_of(client: redis.Redis, key: str, seq: int) -> str:
    """The stream id of the record with `seq`."""
    for entry_id, fields in client.xrange(key):
        if _seq_of(fields) == seq:
            return str(entry_id.decode())
    raise AssertionError(f"no record with seq {seq}")


def edit_stream_record(client: redis.Redis, key: str, seq: int, **changes: Any) -> None:
    """Change fields of record `seq` in place, keeping its stored hash."""

    def edit(entries: Entries) -> Entries:
        edited: Entries = []
        for entry_id, fields in entries:
            if _seq_of(fields) == seq:
                record = {**json.loads(fields[b"event"]), **changes}
                fields = {b"event": json.dumps(record).encode()}
            edited.append((entry_id, fields))
        return edited

    rewrite_stream(client, key, edit)


def delete_stream_record(client: redis.Redis, key: str, seq: int) -> None:
    client.xdel(key, stream_id_of(client, key, seq))


def swap_stream_records(client: redis.Redis, key: str, seq_a: int, seq_b: int) -> None:
    """Put record `seq_a` where `seq_b` was and the other way round."""

    def swap(entries: Entries) -> Entries:
        ids = [entry_id for entry_id, _ in entries]
        fields = [f for _, f in entries]
        a = next(i for i, f in enumerate(fields) if _seq_of(f) == seq_a)
        b = next(i for i, f in enumerate(fields) if _seq_of(f) == seq_b)
        fields[a], fields[b] = fields[b], fields[a]
        return list(zip(ids, fields, strict=True))

    rewrite_stream(client, key, swap)


def _line_index(lines: list[str], seq: int) -> int:
    for index, line in enumerate(lines):
        document = json.loads(line)
        if document.get("seq") == seq and document.get("type") != "audit.checkpoint":
            return index
    raise AssertionError(f"no record line with seq {seq}")


def edit_file_record(path: Path, seq: int, **changes: Any) -> int:
    """Change fields of record `seq` in the file; returns its 1-based line number."""
    lines = path.read_text().splitlines()
    index = _line_index(lines, seq)
    lines[index] = json.dumps({**json.loads(lines[index]), **changes})
    path.write_text("\n".join(lines) + "\n")
    return index + 1


def delete_file_record(path: Path, seq: int) -> None:
    lines = path.read_text().splitlines()
    del lines[_line_index(lines, seq)]
    path.write_text("\n".join(lines) + "\n")


def swap_file_records(path: Path, seq_a: int, seq_b: int) -> None:
    lines = path.read_text().splitlines()
    a, b = _line_index(lines, seq_a), _line_index(lines, seq_b)
    lines[a], lines[b] = lines[b], lines[a]
    path.write_text("\n".join(lines) + "\n")
