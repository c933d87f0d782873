"""The audit hash chain, pure: canonical form, record hashes, signed checkpoints, verification.

Record n stores `seq` n, `prev_hash` (the hash of record n-1; 64 zeros for record 1) and
`hash` = sha256(prev_hash + canonical JSON of the record without `hash`). Editing a record breaks
its own hash; removing or moving one breaks the sequence; rewriting a record *and* re-hashing
everything after it is caught by the checkpoints, which the broker's Ed25519 key signs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from jitbroker.signing import BrokerSigningKey, verify_signature

GENESIS_HASH = "0" * 64
CHECKPOINT_TYPE = "audit.checkpoint"
CHAIN_FIELDS = ("seq", "prev_hash", "hash")

ProblemKind = Literal["altered", "removed", "reordered", "unreadable", "checkpoint"]


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, ASCII: the bytes hashes and signatures are computed over."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def record_hash(prev_hash: str, record: Mapping[str, Any]) -> str:
    """sha256(prev_hash + canonical JSON of `record` without its `hash`), hex."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(prev_hash.encode() + canonical_json(body)).hexdigest()


def chained(event: Mapping[str, Any], *, seq: int, prev_hash: str) -> dict[str, Any]:
    """The event as chain record `seq`, linked to `prev_hash` and carrying its own hash."""
    record = {k: v for k, v in event.items() if k not in CHAIN_FIELDS}
    record.update(seq=seq, prev_hash=prev_hash)
    record["hash"] = record_hash(prev_hash, record)
    return record


def signed_checkpoint(
    *, seq: int, chain_hash: str, time: datetime, key: BrokerSigningKey
) -> dict[str, Any]:
    """A checkpoint vouching that record `seq` has hash `chain_hash`, signed with `key`."""
    body: dict[str, Any] = {
        "type": CHECKPOINT_TYPE,
        "seq": seq,
        "hash": chain_hash,
        "time": time.isoformat(),
        "key_id": key.key_id,
    }
    return {**body, "signature": key.sign(canonical_json(body))}


def checkpoint_signature_problem(
    checkpoint: Mapping[str, Any], keys: Sequence[Mapping[str, str]]
) -> str | None:
    """Why the checkpoint's signature does not hold (None when it does)."""
    key = next((k for k in keys if k.get("kid") == checkpoint.get("key_id")), None)
    if key is None:
        return f"signed by key {checkpoint.get('key_id')!r}, which is not in the key set"
    body = {k: v for k, v in checkpoint.items() if k != "signature"}
    signature = checkpoint.get("signature")
    if not isinstance(signature, str) or not verify_signature(
        dict(key), canonical_json(body), signature
    ):
        return "signature does not verify with the broker's public key"
    return None


@dataclass(frozen=True)
class ChainEntry:
    """One stored line or stream entry: where it is, and its JSON (None if it is not JSON)."""

    position: str
    document: dict[str, Any] | None


@dataclass(frozen=True)
class ChainProblem:
    """The first place the log stops being what the broker wrote."""

    kind: ProblemKind
    seq: int | None
    position: str
    detail: str

    def __str__(self) -> str:
        where = f"seq {self.seq} ({self.position})" if self.seq is not None else self.position
        return f"{where}: {self.kind}: {self.detail}"


@dataclass
class ChainReport:
    """What a walk of the chain found; `problems[0]` is the first tampered record."""

    records: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    unchained: list[str] = field(default_factory=list)
    checkpoints_verified: int = 0
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def split_file_lines(lines: Sequence[str]) -> tuple[list[ChainEntry], list[ChainEntry]]:
    """Records and checkpoints from the lines of an audit JSON-lines file (blank lines skipped)."""
    records: list[ChainEntry] = []
    checkpoints: list[ChainEntry] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        entry = ChainEntry(f"line {number}", _json_object(line))
        is_checkpoint = entry.document is not None and entry.document.get("type") == CHECKPOINT_TYPE
        (checkpoints if is_checkpoint else records).append(entry)
    return records, checkpoints


def verify_chain(
    records: Sequence[ChainEntry],
    *,
    checkpoints: Sequence[ChainEntry] = (),
    keys: Sequence[Mapping[str, str]] | None = None,
    head: tuple[int, str] | None = None,
) -> ChainReport:
    """Walk `records` in stored order and report the first altered, removed or reordered one."""
    # `head` (seq, hash): where the writer says the chain ends, read before `records`.
    # `keys`: the broker's JWKS; without it checkpoint signatures are not checked.
    report = ChainReport()
    hashes = _walk(records, report)
    if head is not None and not report.problems:
        _check_head(head, hashes, report)
    _check_checkpoints(checkpoints, keys, hashes, report)
    return report


def _walk(records: Sequence[ChainEntry], report: ChainReport) -> dict[int, tuple[str, str]]:
    """Follow the chain; returns seq -> (hash, position) of every record found intact."""
    intact: dict[int, tuple[str, str]] = {}
    chain = [e for e in records if e.document is None or not _unchained(e.document)]
    report.unchained = [e.position for e in records if e.document and _unchained(e.document)]
    first_index_of = _first_index_of_seq(chain)
    expected, prev_hash, prev_position = 1, GENESIS_HASH, "the start of the chain"
    for index, entry in enumerate(chain):
        problem = _problem_at(
            entry, index, expected, prev_hash, prev_position, first_index_of, chain
        )
        if problem is not None:
            report.problems.append(problem)
            break
        assert entry.document is not None
        prev_hash = entry.document["hash"]
        intact[expected] = (prev_hash, entry.position)
        report.records, report.last_seq, report.last_hash = expected, expected, prev_hash
        expected, prev_position = expected + 1, entry.position
    return intact


def _problem_at(
    entry: ChainEntry,
    index: int,
    expected: int,
    prev_hash: str,
    prev_position: str,
    first_index_of: dict[int, int],
    chain: Sequence[ChainEntry],
) -> ChainProblem | None:
    document = entry.document
    if document is None:
        return ChainProblem("unreadable", None, entry.position, "not a JSON object")
    seq, stored_hash, linked = document.get("seq"), document.get("hash"), document.get("prev_hash")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return ChainProblem("altered", None, entry.position, "its seq is missing or malformed")
    if not isinstance(stored_hash, str) or not isinstance(linked, str):
        return ChainProblem("altered", seq, entry.position, "its hash fields are malformed")
    if record_hash(linked, document) != stored_hash:
        return ChainProblem(
            "altered", seq, entry.position, "its content no longer matches its hash (edited)"
        )
    if seq > expected:
        later = first_index_of.get(expected)
        if later is not None and later > index:
            return ChainProblem(
                "reordered",
                seq,
                entry.position,
                f"seq {seq} stands before seq {expected} ({chain[later].position})",
            )
        missing = f"seq {expected}" if seq == expected + 1 else f"seqs {expected}..{seq - 1}"
        return ChainProblem(
            "removed",
            expected,
            entry.position,
            f"{missing} missing: {_describe(expected - 1, prev_position)} is followed by seq {seq}",
        )
    if seq < expected:
        return ChainProblem(
            "reordered", seq, entry.position, f"seq {seq} appears again after seq {expected - 1}"
        )
    if linked != prev_hash:
        if seq == 1:
            return ChainProblem(
                "altered", 1, entry.position, "the first record does not start from the genesis"
            )
        return ChainProblem(
            "altered",
            seq - 1,
            prev_position,
            f"rewritten: its hash {prev_hash[:16]}… is not the prev_hash {linked[:16]}… "
            f"that seq {seq} ({entry.position}) chained to",
        )
    return None


def _check_head(
    head: tuple[int, str], intact: dict[int, tuple[str, str]], report: ChainReport
) -> None:
    seq, expected_hash = head
    if seq == 0:
        return
    if seq not in intact:
        report.problems.append(
            ChainProblem(
                "removed",
                report.last_seq + 1,
                "the end of the chain",
                f"the chain ends at seq {report.last_seq}, but the writer's head is seq {seq}",
            )
        )
    elif intact[seq][0] != expected_hash:
        report.problems.append(
            ChainProblem(
                "altered",
                seq,
                intact[seq][1],
                "rewritten: its hash is not the one the writer's head recorded",
            )
        )


def _check_checkpoints(
    checkpoints: Sequence[ChainEntry],
    keys: Sequence[Mapping[str, str]] | None,
    intact: dict[int, tuple[str, str]],
    report: ChainReport,
) -> None:
    walked_to_end = not report.problems
    last_matching = 0
    for entry in sorted(checkpoints, key=lambda e: _checkpoint_seq(e) or 0):
        document = entry.document
        seq = _checkpoint_seq(entry)
        if document is None or seq is None or not isinstance(document.get("hash"), str):
            report.problems.append(
                ChainProblem("checkpoint", None, entry.position, "malformed checkpoint")
            )
            continue
        if keys is not None:
            why = checkpoint_signature_problem(document, keys)
            if why is not None:
                report.problems.append(ChainProblem("checkpoint", seq, entry.position, why))
                continue
        if seq in intact:
            found_hash, record_position = intact[seq]
            if found_hash != document["hash"]:
                report.problems.append(
                    ChainProblem(
                        "altered",
                        seq,
                        record_position,
                        f"the chain was rewritten after seq {last_matching}: the checkpoint at "
                        f"{entry.position} signed another hash for seq {seq}",
                    )
                )
                continue
            last_matching = seq
            report.checkpoints_verified += 1
        elif walked_to_end and seq > report.last_seq:
            report.problems.append(
                ChainProblem(
                    "removed",
                    report.last_seq + 1,
                    "the end of the chain",
                    f"the chain ends at seq {report.last_seq}, but the checkpoint at "
                    f"{entry.position} vouches for seq {seq}",
                )
            )


def _describe(seq: int, position: str) -> str:
    return f"seq {seq} ({position})" if seq else position


def _checkpoint_seq(entry: ChainEntry) -> int | None:
    seq = entry.document.get("seq") if entry.document else None
    return seq if _is_int(seq) else None


def _first_index_of_seq(chain: Sequence[ChainEntry]) -> dict[int, int]:
    first: dict[int, int] = {}
    for index, entry in enumerate(chain):
        seq = entry.document.get("seq") if entry.document else None
        if isinstance(seq, int) and not isinstance(seq, bool):
            first.setdefault(seq, index)
    return first


def _unchained(document: Mapping[str, Any]) -> bool:
    """Written while Redis was unreachable (or before the chain existed): no chain fields."""
    return not any(name in document for name in CHAIN_FIELDS)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_object(text: str | bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def parse_entry(position: str, text: str | bytes | None) -> ChainEntry:
    """A stored record or checkpoint as a ChainEntry (document None when it is not JSON)."""
    return ChainEntry(position, _json_object(text) if text is not None else None)
