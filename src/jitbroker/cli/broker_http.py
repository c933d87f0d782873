"""The CLI's way to talk to a running broker: options, the approver token, one HTTP call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

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


def approver_token(token: str | None, token_file: Path | None, as_human: str | None) -> str:
    """The approver JWT from --token, --token-file, or (dev stack only) a minted --as token."""
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
            fail(f"unknown dev human {as_human!r}; known: {sorted(config.dev_humans)}")
        directory = settings.dev_issuer_dir or Path(".dev/issuers")
        return DevIssuer(directory).human_token(config, as_human)
    fail("an approver token is needed: --token, JITBROKER_TOKEN, --token-file or --as (dev)")


def call_broker(
    api: str,
    token: str,
    method: str,
    path: str,
    *,
    params: dict[str, str] | None = None,
    json_body: dict[str, Any] | None = None,
) -> Any:
    """One API call; a problem+json answer is printed and exits 1, no answer exits 2."""
    client = client_factory(api, token)
    try:
        response = client.request(method, path, params=params, json=json_body)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the broker at {api}: {exc}")
    finally:
        client.close()
    if response.is_error:
        try:
            problem = response.json()
            message = f"{problem.get('title', 'error')}: {problem.get('detail', '')}"
        except ValueError:
            message = response.text[:200]
        fail(f"{response.status_code} {message}")
    return response.json()


def fail(message: str) -> NoReturn:
    """Print to stderr and exit: 1 for an HTTP refusal, 2 for a usage or connection problem."""
    typer.echo(message, err=True)
    raise typer.Exit(1 if message[:3].isdigit() else 2)
