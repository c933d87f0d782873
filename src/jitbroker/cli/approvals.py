"""`jitbroker approvals`: list, show, approve and deny requests from a terminal."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from jitbroker.cli.broker_http import (
    DEFAULT_API,
    ApiOption,
    AsOption,
    JsonOption,
    TokenFileOption,
    TokenOption,
    approver_token,
    call_broker,
)

approvals_app = typer.Typer(
    no_args_is_help=True,
    help="Decide on grants waiting for approval (needs an approver's token).",
)


@approvals_app.command("list")
def list_requests(
    api: ApiOption = DEFAULT_API,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    as_human: AsOption = None,
    review: Annotated[bool, typer.Option("--review", help="Break-glass grants to review")] = False,
    as_json: JsonOption = False,
) -> None:
    """Requests waiting for your groups (or, with --review, break-glass grants to review)."""
    items = call_broker(
        api,
        approver_token(token, token_file, as_human),
        "GET",
        "/v1/approvals",
        params={"state": "review" if review else "pending"},
    )
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    if not items:
        typer.echo("nothing waits for you")
        return
    for item in items:
        typer.echo(
            f"{item['grant_id']}  {item['workload']} → {item['profile']} "
            f"{'/'.join(item['scopes'])} for {item['ttl_seconds']}s  "
            f"[{len([v for v in item['votes'] if v['decision'] == 'approve'])}/"
            f"{item['approvals_required']}, {item['seconds_left']}s left]  "
            f"{item['justification']}"
        )


@approvals_app.command("show")
def show_request(
    grant_id: str,
    api: ApiOption = DEFAULT_API,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    as_human: AsOption = None,
) -> None:
    """Everything an approver needs to decide on one request."""
    item = call_broker(
        api, approver_token(token, token_file, as_human), "GET", f"/v1/approvals/{grant_id}"
    )
    typer.echo(json.dumps(item, indent=2))


@approvals_app.command("approve")
def approve_request(
    grant_id: str,
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why you approve")] = "",
    ttl: Annotated[
        int | None, typer.Option("--ttl", help="Approve a shorter TTL (seconds)")
    ] = None,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="Approve only these scopes")
    ] = None,
    api: ApiOption = DEFAULT_API,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    as_human: AsOption = None,
) -> None:
    """Approve a request, optionally narrowing its TTL or scopes."""
    body: dict[str, Any] = {"comment": comment}
    if ttl is not None:
        body["ttl_seconds"] = ttl
    if scope:
        body["scopes"] = scope
    grant = call_broker(
        api,
        approver_token(token, token_file, as_human),
        "POST",
        f"/v1/grants/{grant_id}/approve",
        json_body=body,
    )
    typer.echo(f"{grant_id}: {grant['state']}")


@approvals_app.command("deny")
def deny_request(
    grant_id: str,
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why you deny")],
    api: ApiOption = DEFAULT_API,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    as_human: AsOption = None,
) -> None:
    """Deny a request; it can no longer be issued."""
    grant = call_broker(
        api,
        approver_token(token, token_file, as_human),
        "POST",
        f"/v1/grants/{grant_id}/deny",
        json_body={"comment": comment},
    )
    typer.echo(f"{grant_id}: {grant['state']}")
