"""`jitbroker policy`: evaluate a sample request, or run the policy tests, without a broker."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from jitbroker.config import BrokerConfig, Settings, load_config
from jitbroker.errors import ConfigError
from jitbroker.policy.schemas import Decision
from jitbroker.policy.testing import (
    CaseResult,
    InvalidSampleRequest,
    SampleRequest,
    check_request,
    run_policy_tests,
)

policy_app = typer.Typer(
    no_args_is_help=True,
    help="Review policy changes like code: check one request, run the policy tests.",
)


@policy_app.command("check")
def policy_check(
    request_file: Annotated[
        Path, typer.Argument(metavar="REQUEST.json", help="Sample request to evaluate")
    ],
    config_dir: Annotated[
        Path | None,
        typer.Option("--config", help="Config directory (default: JITBROKER_CONFIG_DIR)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object")] = False,
) -> None:
    """Decide one sample request offline and print the effect, the rule and any approval terms."""
    config = _config_or_exit(config_dir or Settings().config_dir)
    sample = _sample_or_exit(request_file)
    try:
        evaluation = check_request(config, sample)
    except InvalidSampleRequest as exc:
        _fail(f"{request_file}: {exc}")
    for note in evaluation.notes:
        typer.echo(f"note: {note}", err=True)
    decision = evaluation.decision
    if as_json:
        body: dict[str, Any] = {
            **decision.as_dict(),
            "approval": asdict(decision.approval) if decision.approval else None,
            "notes": list(evaluation.notes),
        }
        typer.echo(json.dumps(body, indent=2))
        return
    typer.echo(f"{_outcome(decision)}: {decision.reason}")
    if decision.approval is not None:
        approval = decision.approval
        groups = "group" if len(approval.approver_groups) == 1 else "groups"
        typer.echo(
            f"  approvals: {approval.approvals} from {groups} {', '.join(approval.approver_groups)}"
        )
        typer.echo(f"  approval ttl: {approval.approval_ttl_seconds}s")
        typer.echo(
            f"  break-glass: allowed, at most {approval.break_glass_max_ttl_seconds}s"
            if approval.break_glass
            else "  break-glass: not allowed"
        )


@policy_app.command("test")
def policy_test(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Config directory (default: JITBROKER_CONFIG_DIR)"),
    ] = None,
) -> None:
    """Run every `policy_tests` case of a config directory; exit 1 if any fails."""
    path = directory or Settings().config_dir
    results = run_policy_tests(_config_or_exit(path))
    if not results:
        _fail(f"{path}: no policy_tests cases to run")
    for result in results:
        for note in result.notes:
            typer.echo(f"note: {result.case.name}: {note}", err=True)
        typer.echo(_case_line(result))
    failed = sum(1 for result in results if not result.passed)
    typer.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        raise typer.Exit(1)


def _case_line(result: CaseResult) -> str:
    if result.passed:
        return f"PASS {result.case.name}"
    expected = result.case.expect + (f" by rule {result.case.rule}" if result.case.rule else "")
    if result.decision is None:
        return f"FAIL {result.case.name}: expected {expected}, cannot evaluate: {result.problem}"
    got = _outcome(result.decision)
    return f"FAIL {result.case.name}: expected {expected}, got {got} ({result.decision.reason})"


def _outcome(decision: Decision) -> str:
    return f"{decision.effect} by rule {decision.rule}"


def _config_or_exit(directory: Path) -> BrokerConfig:
    try:
        return load_config(directory)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")


def _sample_or_exit(path: Path) -> SampleRequest:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{path}: cannot be read: {exc}")
    except json.JSONDecodeError as exc:
        _fail(f"{path}: not valid JSON: {exc}")
    if not isinstance(document, dict):
        _fail(f"{path}: top level must be a JSON object")
    try:
        return SampleRequest.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(part) for part in err['loc'])}': {err['msg']}"
            for err in exc.errors()
        )
        _fail(f"{path}: {problems}")


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(2)
