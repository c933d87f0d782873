"""`jitbroker workloads|reviews|report`: the inventory, production sign-off and access reviews."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
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

workloads_app = typer.Typer(
    no_args_is_help=True,
    help="The workload inventory; production sign-off and access reviews by the owner team.",
)
reviews_app = typer.Typer(no_args_is_help=True, help="Access reviews that are due.")
report_app = typer.Typer(no_args_is_help=True, help="Least-privilege reports.")

Decision = Annotated[str, typer.Argument(metavar="keep|reduce|retire", help="Your attestation")]
Comment = Annotated[str, typer.Option("--comment", "-m", help="Lands in the audit log")]


@workloads_app.command("list")
def list_workloads(
    api: ApiOption = DEFAULT_API,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    as_human: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Owner, environment, kind, privilege, last use and next review of every workload."""
    items = _get(api, token, token_file, as_human, "/v1/workloads")
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    rows = [
        [
            item["id"],
            item["owner_team"] or "UNOWNED",
            item["environment"],
            item["kind"] or "—",
            "yes" if item["privileged"] else "no",
            _state(item),
            _time(item["last_used_at"]) or "never",
            _time(item["next_review_due"]) + (" OVERDUE" if item["review_overdue"] else ""),
        ]
        for item in items
    ]
    header = ["WORKLOAD", "OWNER", "ENV", "KIND", "PRIVILEGED", "STATE", "LAST USED", "NEXT REVIEW"]
    _table(header, rows)
    for item in items:
        if item["privileged_scopes"]:
            typer.echo(f"{item['id']}: privileged scopes {', '.join(item['privileged_scopes'])}")
        if item["missing"]:
            typer.echo(f"{item['id']}: unowned, missing {', '.join(item['missing'])}")


@workloads_app.command("sign-off")
def sign_off(
    workload_id: Annotated[str, typer.Argument(metavar="ID")],
    comment: Comment = "",
    api: ApiOption = DEFAULT_API,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    as_human: AsOption = None,
) -> None:
    """Sign off a production workload as configured now (you must be in its owner team)."""
    record = call_broker(
        api,
        approver_token(token, token_file, as_human),
        "POST",
        f"/v1/workloads/{workload_id}/sign-off",
        json_body={"comment": comment},
    )
    typer.echo(
        f"{workload_id}: signed off for {record['environment']} by {record['signed_by']} "
        f"({record['owner_team']}) at {_time(record['signed_at'])}"
    )


@workloads_app.command("review")
def review(
    workload_id: Annotated[str, typer.Argument(metavar="ID")],
    decision: Decision,
    comment: Comment = "",
    api: ApiOption = DEFAULT_API,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    as_human: AsOption = None,
) -> None:
    """Attest the workload's access (you must be in its owner team); restarts the review clock."""
    item = call_broker(
        api,
        approver_token(token, token_file, as_human),
        "POST",
        f"/v1/workloads/{workload_id}/review",
        json_body={"decision": decision, "comment": comment},
    )
    last = item["last_review"]
    typer.echo(
        f"{workload_id}: {last['decision']} by {last['reviewed_by']}; state {_state(item)}, "
        f"next review due {_time(item['next_review_due'])}"
    )


@reviews_app.command("due")
def reviews_due(
    api: ApiOption = DEFAULT_API,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    as_human: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Workloads whose access review is overdue, and when each one gets suspended."""
    items = _get(api, token, token_file, as_human, "/v1/reviews/due")
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    if not items:
        typer.echo("no access review is overdue")
        return
    rows = [
        [
            item["workload"],
            item["owner_team"] or "UNOWNED",
            item["environment"],
            _time(item["due_at"]),
            _days(item["overdue_seconds"]),
            item["state"] if item["state"] != "active" else _time(item["suspends_at"]),
        ]
        for item in items
    ]
    _table(["WORKLOAD", "OWNER", "ENV", "DUE", "OVERDUE", "SUSPENDED / SUSPENDS AT"], rows)


@report_app.command("unused")
def report_unused(
    days: Annotated[int, typer.Option("--days", min=0, help="Not issued within this many days")],
    api: ApiOption = DEFAULT_API,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    as_human: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Scopes each workload may request but has not been issued in the last N days."""
    items = _get(api, token, token_file, as_human, "/v1/reports/unused", {"days": str(days)})
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    if not items:
        typer.echo(f"every scope a workload may request was used in the last {days} days")
        return
    rows = [
        [
            item["workload"],
            f"{item['profile']}/{item['scope']}",
            ", ".join(item["capabilities"]) + (" (privileged)" if item["privileged"] else ""),
            _time(item["last_used_at"]) or f"never (seen since {_time(item['observed_since'])})",
        ]
        for item in items
    ]
    _table(["WORKLOAD", "SCOPE", "CAPABILITIES", "LAST USED"], rows)


def _get(
    api: str,
    token: str | None,
    token_file: Path | None,
    as_human: str | None,
    path: str,
    params: dict[str, str] | None = None,
) -> Any:
    return call_broker(api, approver_token(token, token_file, as_human), "GET", path, params=params)


def _state(item: dict[str, Any]) -> str:
    if item["state"] == "active" and item.get("sign_off") in ("missing", "stale"):
        return f"active (sign-off {item['sign_off']})"
    return str(item["state"])


def _time(value: str | None) -> str:
    """An API timestamp (UTC) to the minute."""
    if not value:
        return ""
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M")


def _days(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    return f"{days}d {rest // 3600}h" if days else f"{rest // 3600}h {rest % 3600 // 60}m"


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())
