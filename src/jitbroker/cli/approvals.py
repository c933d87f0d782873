"""`jitbroker approvals`: list, show, approve and deny requests from a terminal."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

approvals_app = typer.Typer(
    no_args_is_help=True,
    help="Decide on grants waiting for approval (needs an approver's token).",
)

DEFAULT_API = "http://127.0.0.1:8400"

ApiOption = Annotated[str, typer.Option("--api", envvar="JITBROKER_API", help="Broker URL")]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="JITBROKER_TOKEN", help="Approver JWT", show_default=False),
]
TokenFileOption = Annotated[
    Path | None, typer.Option("--token-file", help="File holding the approver JWT")
]
AsOption = Annotated[
    str | None,
    typer.Option("--as", help="Dev stack only: act as this dev human (e.g. alice)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON")]


def http_client(api: str, token: str) -> httpx.Client:
    """The HTTP client the commands use (tests substitute one bound to an in-process app)."""
    return httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=30)


client_factory: Callable[[str, str], httpx.Client] = http_client


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
    items = _call(
        api,
        _token(token, token_file, as_human),
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
    item = _call(api, _token(token, token_file, as_human), "GET", f"/v1/approvals/{grant_id}")
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
    grant = _call(
        api,
        _token(token, token_file, as_human),
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
    grant = _call(
        api,
        _token(token, token_file, as_human),
        "POST",
        f"/v1/grants/{grant_id}/deny",
        json_body={"comment": comment},
    )
    typer.echo(f"{grant_id}: {grant['state']}")


def _token(token: str | None, token_file: Path | None, as_human: str | None) -> str:
    if token:
        return token.strip()
    if token_file is not None:
        return token_file.read_text().strip()
    if as_human is not None:
        from jitbroker.config import Settings, load_config
        from jitbroker.identity.dev_issuer import DevIssuer

        settings = Settings()
        config = load_config(settings.config_dir)
        if as_human not in config.dev_humans:
            _fail(f"unknown dev human {as_human!r}; known: {sorted(config.dev_humans)}")
        directory = settings.dev_issuer_dir or Path(".dev/issuers")
        return DevIssuer(directory).human_token(config, as_human)
    _fail("an approver token is needed: --token, JITBROKER_TOKEN, --token-file or --as (dev)")


def _call(
    api: str,
    token: str,
    method: str,
    path: str,
    *,
    params: dict[str, str] | None = None,
    json_body: dict[str, Any] | None = None,
) -> Any:
    client = client_factory(api, token)
    try:
        response = client.request(method, path, params=params, json=json_body)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the broker at {api}: {exc}")
    finally:
        client.close()
    if response.is_error:
        try:
            problem = response.json()
            message = f"{problem.get('title', 'error')}: {problem.get('detail', '')}"
        except ValueError:
            message = response.text[:200]
        _fail(f"{response.status_code} {message}")
    return response.json()


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(1 if message[:3].isdigit() else 2)
