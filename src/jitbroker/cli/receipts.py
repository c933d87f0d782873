"""`jitbroker receipt verify`: check revocation receipts offline against the broker's key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from jitbroker.revocation.receipts import verify_receipt

receipt_app = typer.Typer(no_args_is_help=True, help="Verify signed revocation receipts.")


@receipt_app.command("verify")
def verify(
    receipt_file: Annotated[Path, typer.Argument(metavar="FILE", help="Receipt(s) as JSON")],
    key_file: Annotated[
        Path | None, typer.Option("--key", help="The broker's JWKS (GET /v1/keys), saved")
    ] = None,
    api: Annotated[
        str | None, typer.Option("--api", help="Fetch the key from this broker instead")
    ] = None,
) -> None:
    """Exit 0 only if every receipt in FILE carries a valid signature by the broker's key."""
    try:
        document: Any = json.loads(receipt_file.read_text())
        keys = public_keys(key_file, api)
    except (OSError, ValueError, httpx.HTTPError) as exc:
        typer.echo(f"cannot verify: {exc}", err=True)
        raise typer.Exit(2) from None
    receipts = _receipts_in(document)
    if not receipts:
        typer.echo("no receipt in the file", err=True)
        raise typer.Exit(2)
    all_valid = True
    for receipt in receipts:
        key = next((k for k in keys if k.get("kid") == receipt.get("key_id")), None)
        valid = key is not None and verify_receipt(receipt, key)
        all_valid &= valid
        checks = ", ".join(f"{c['name']}={c['status']}" for c in receipt.get("checks", []))
        typer.echo(f"{'VALID  ' if valid else 'INVALID'} {receipt.get('grant_id')}  {checks}")
    raise typer.Exit(0 if all_valid else 1)


def public_keys(key_file: Path | None, api: str | None) -> list[dict[str, str]]:
    """The broker's public keys from a saved JWKS (or single JWK) file, or from a broker."""
    if key_file is not None:
        document = json.loads(key_file.read_text())
    elif api is not None:
        document = httpx.get(f"{api.rstrip('/')}/v1/keys", timeout=10).json()
    else:
        raise ValueError("give --key FILE or --api URL")
    keys = document.get("keys", [document]) if isinstance(document, dict) else []
    return [k for k in keys if isinstance(k, dict)]


def _receipts_in(document: Any) -> list[dict[str, Any]]:
    """A receipt, a list of them, a task's receipts or a completion answer."""
    if isinstance(document, list):
        return [r for r in document if isinstance(r, dict)]
    if isinstance(document, dict) and isinstance(document.get("receipts"), list):
        return [r for r in document["receipts"] if isinstance(r, dict)]
    return [document] if isinstance(document, dict) and "signature" in document else []
