"""`jitbroker doctor` and `jitbroker openbao policy`: checking and preparing a deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jitbroker.config import Settings, load_config
from jitbroker.doctor import Status, run_doctor
from jitbroker.errors import ConfigError
from jitbroker.vault_policy import render_policy

openbao_app = typer.Typer(no_args_is_help=True, help="The broker's OpenBao/Vault side.")
LABELS = {Status.passed: "PASS", Status.warning: "WARN", Status.failed: "FAIL"}


@openbao_app.command("policy")
def openbao_policy(
    config: Annotated[
        Path | None,  # noqa: UP007
        typer.Option("--config", help="Config directory (default: JITBROKER_CONFIG_DIR)"),
    ] = None,
) -> None:
    """Print the least-privilege OpenBao policy (HCL) for a config directory's profiles."""
    directory = config or Settings().config_dir
    try:
        hcl = render_policy(load_config(directory))
    except (ConfigError, ValueError) as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(hcl, nl=False)


def doctor(
    config: Annotated[
        Path | None,  # noqa: UP007
        typer.Option("--config", help="Config directory (default: JITBROKER_CONFIG_DIR)"),
    ] = None,
) -> None:
    """Check OpenBao, the profiles' roles and policy, Redis, the clock and the signing key."""
    settings = Settings()
    if config is not None:
        settings = settings.model_copy(update={"config_dir": config})
    report = run_doctor(settings)
    for result in report.results:
        typer.echo(f"{LABELS[result.status]}  {result.name}: {result.detail}")
        if result.status != Status.passed and result.fix:
            typer.echo(f"      fix: {result.fix}")
    typer.echo(
        f"doctor: {report.count(Status.passed)} pass, {report.count(Status.warning)} warn, "
        f"{report.count(Status.failed)} fail"
    )
    raise typer.Exit(0 if report.ok else 1)
