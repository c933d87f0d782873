"""The `jitbroker` command: serve, worker, scheduler, config check, dev helpers."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from jitbroker.cli.approvals import approvals_app
from jitbroker.cli.audit import audit_app
from jitbroker.cli.deployment import doctor, openbao_app
from jitbroker.cli.exec_command import EXEC_EPILOG, exec_command
from jitbroker.cli.inventory import report_app, reviews_app, workloads_app
from jitbroker.cli.policy import policy_app
from jitbroker.cli.receipts import receipt_app
from jitbroker.config import Settings, configure_logging, load_config
from jitbroker.errors import ConfigError

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
config_app = typer.Typer(no_args_is_help=True, help="Validate the configuration directory.")
dev_app = typer.Typer(no_args_is_help=True, help="Local development helpers.")
app.add_typer(config_app, name="config")
app.add_typer(dev_app, name="dev")
app.add_typer(policy_app, name="policy")
app.add_typer(approvals_app, name="approvals")
app.add_typer(receipt_app, name="receipt")
app.add_typer(audit_app, name="audit")
app.add_typer(workloads_app, name="workloads")
app.add_typer(reviews_app, name="reviews")
app.add_typer(report_app, name="report")
app.command("exec", epilog=EXEC_EPILOG, context_settings={"allow_interspersed_args": False})(
    exec_command
)
app.add_typer(openbao_app, name="openbao")
app.command()(doctor)


def _settings_or_exit() -> Settings:
    settings = Settings()
    try:
        load_config(settings.config_dir)
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    return settings


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address")] = None,  # noqa: UP007
    port: Annotated[int | None, typer.Option(help="Listen port")] = None,  # noqa: UP007
    workers: Annotated[
        int | None,  # noqa: UP007
        typer.Option(
            min=1,
            help="API server processes sharing the port (default: JITBROKER_API_WORKERS, 1). "
            "Process-local Prometheus metrics then describe whichever process answers a scrape.",
        ),
    ] = None,
) -> None:
    """Run the HTTP API."""
    import uvicorn

    from jitbroker.server import APP_FACTORY, uvicorn_options
    from jitbroker.signing import BrokerSigningKey

    settings = _settings_or_exit()
    overrides = {"listen_host": host, "listen_port": port, "api_workers": workers}
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings)
    # Create the signing key (if missing) once, here: workers starting together would each
    # write their own and then disagree on receipt signatures and route fingerprints.
    BrokerSigningKey.load_or_create(settings.signing_key_file)
    uvicorn.run(APP_FACTORY, **uvicorn_options(settings))


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Worker processes")] = 2,
    queues: Annotated[
        str | None,  # noqa: UP007
        typer.Option(help="Comma-separated queues (default: revocation and notifications)"),
    ] = None,
) -> None:
    """Run a Celery worker for revocations and webhook notifications."""
    from jitbroker.worker import NOTIFICATION_QUEUE, REVOCATION_QUEUE, create_celery

    settings = _settings_or_exit()
    configure_logging(settings)
    celery = create_celery(settings)
    celery.worker_main(
        [
            "worker",
            f"--loglevel={settings.log_level.upper()}",
            f"--concurrency={concurrency}",
            "-Q",
            queues or f"{REVOCATION_QUEUE},{NOTIFICATION_QUEUE}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@app.command()
def scheduler() -> None:
    """Run the expiry scheduler (one is active at a time; extra ones stand by)."""
    from jitbroker.bootstrap import build_broker
    from jitbroker.revocation.scheduler import run_scheduler

    settings = _settings_or_exit()
    configure_logging(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_scheduler(build_broker(settings), stop)


@config_app.command("check")
def config_check(
    directory: Annotated[Path | None, typer.Argument(help="Config directory")] = None,  # noqa: UP007
) -> None:
    """Validate a configuration directory and summarise it."""
    path = directory or Settings().config_dir
    try:
        config = load_config(path)
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"{path}: {len(config.issuers)} issuers, {len(config.workloads)} workloads, "
        f"{len(config.profiles)} profiles, {len(config.rules)} rules: OK"
    )
    for workload in config.workloads.values():
        if workload.unowned:
            typer.echo(
                f"note: workload {workload.id!r} is unowned (no "
                f"{' and '.join(workload.missing_inventory)}); it gets nothing in prod",
                err=True,
            )


@dev_app.command("token")
def dev_token(
    workload: Annotated[str | None, typer.Argument(help="Workload id")] = None,  # noqa: UP007
    human: Annotated[str | None, typer.Option(help="Dev human (approver) name")] = None,  # noqa: UP007
    ttl: Annotated[int, typer.Option(help="Token lifetime in seconds")] = 900,
) -> None:
    """Print a JWT signed by the dev issuer for a workload, or for a human with --human."""
    from jitbroker.identity.dev_issuer import DevIssuer

    settings = Settings()
    config = load_config(settings.config_dir)
    issuer = DevIssuer(settings.dev_issuer_dir or Path(".dev/issuers"))
    if human is not None:
        if human not in config.dev_humans:
            typer.echo(f"unknown dev human {human!r}; known: {sorted(config.dev_humans)}", err=True)
            raise typer.Exit(2)
        typer.echo(issuer.human_token(config, human, ttl_seconds=ttl))
        return
    if workload is None or workload not in config.workloads:
        typer.echo(f"name a workload: one of {sorted(config.workloads)}", err=True)
        raise typer.Exit(2)
    typer.echo(issuer.workload_token(config, workload, ttl_seconds=ttl))


@dev_app.command("stack")
def dev_stack() -> None:
    """Run the whole local stack in the foreground (what `make run` does)."""
    from jitbroker.dev.stack import run_stack

    raise typer.Exit(run_stack())


def main() -> None:
    app()
