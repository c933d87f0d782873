"""Revocation receipts: what was revoked, when, how it was verified; signed with Ed25519."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from jitbroker.signing import BrokerSigningKey, verify_signature

# `bounded`: the credential cannot be cut early at its source (SSH certificates) and dies at
# the time the check's detail gives.
CheckStatus = Literal["passed", "failed", "skipped", "bounded"]


class ReceiptCheck(BaseModel):
    """One place where the credential lived, and what looking there showed."""

    name: str
    status: CheckStatus
    detail: str


class RevocationReceipt(BaseModel):
    """Proof that a grant's credential no longer works, verifiable offline with the broker key."""

    version: int = 1
    grant_id: str
    task_id: str
    workload: str
    profile: str
    engine: str
    principal: str | None
    destinations: list[str]
    reason: str
    requested_at: datetime | None
    revoked_at: datetime
    duration_ms: int
    checks: list[ReceiptCheck]
    key_id: str
    signature: str = ""

    def signed_bytes(self) -> bytes:
        """The canonical JSON that the signature covers (everything but the signature)."""
        body = self.model_dump(mode="json", exclude={"signature"})
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def signed_with(self, key: BrokerSigningKey) -> RevocationReceipt:
        return self.model_copy(update={"signature": key.sign(self.signed_bytes())})


class TaskReceipts(BaseModel):
    """Every receipt of a task so far; `pending` lists grants not yet confirmed revoked."""

    task_id: str
    key_id: str
    receipts: list[RevocationReceipt]
    pending: list[str]


def verify_receipt(document: dict[str, object], public_jwk: dict[str, str]) -> bool:
    """True when `document` is a receipt whose signature the key made, byte for byte."""
    try:
        receipt = RevocationReceipt.model_validate(document)
    except ValueError:
        return False
    if receipt.key_id != public_jwk.get("kid"):
        return False
    # Re-serialising a parsed receipt would hide edits that parse to the same values, so the
    # canonical form is rebuilt from the document exactly as given.
    body = {k: v for k, v in document.items() if k != "signature"}
    message = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return verify_signature(public_jwk, message, receipt.signature)
