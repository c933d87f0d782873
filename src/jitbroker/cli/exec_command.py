"""`jitbroker exec`: run a command with task-bound credentials in its environment."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn, TextIO

import typer
from pydantic import TypeAdapter, ValidationError

from jitbroker.client.broker import DEFAULT_API, Broker, Task
from jitbroker.client.credentials import Credential
from jitbroker.client.environment import env_name
from jitbroker.client.errors import (
    ApprovalRequired,
    ApprovalTimedOut,
    BrokerError,
    Denied,
    IdentityTokenUnavailable,
)
from jitbroker.client.flows import ApprovalStatus
from jitbroker.client.token_discovery import DEFAULT_AUDIENCE, discover_token
from jitbroker.config import Seconds

EXIT_BROKER_FAILURE = 125  # jitbroker itself failed: no token, denied, broker unreachable
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DEFAULT_SCOPE = "read"
# The workload's identity token stays with jitbroker; the command gets task credentials only.
WITHHELD_VARIABLES = frozenset({"JITBROKER_TOKEN", "JITBROKER_ID_TOKEN"})
# Room for the grants to be requested and issued after any approval wait.
TASK_TTL_MARGIN_SECONDS = 60
LIVE_POLL_SECONDS = 5.0

EXEC_EPILOG = (
    "Opens a task with a heartbeat, obtains a grant per --profile (waiting for approval if "
    "needed), runs the command with the credentials as environment variables (PGHOST, PGUSER, "
    "PGPASSWORD, DATABASE_URL, ...; VAULT_TOKEN, VAULT_ADDR) and JITBROKER_TASK_ID, forwards "
    "SIGINT, SIGTERM and SIGHUP to it, and completes the task when it exits. Exit code: the "
    "command's (128+N when signal N killed it); 125 when jitbroker failed (no identity token, "
    "denied, broker unreachable); 126/127 when the command cannot run. Identity token: "
    "--token-file, JITBROKER_TOKEN, or the ambient GitHub Actions, GitLab CI or Kubernetes "
    "identity; JITBROKER_TOKEN and JITBROKER_ID_TOKEN are kept from the command."
)


@dataclass(frozen=True)
class ProfileRequest:
    """One `--profile NAME[:scope,scope]`: a grant to obtain before the command runs."""

    profile: str
    scopes: list[str]


def exec_command(
    command: Annotated[
        list[str],
        typer.Argument(help="The command and its arguments (after --)", show_default=False),
    ],
    profile: Annotated[
        list[str],
        typer.Option(
            "--profile",
            "-p",
            help="PROFILE or PROFILE:scope,scope; repeat for several grants in one task",
            show_default=False,
        ),
    ],
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", "-s", help="Scopes for profiles named without any [default: read]"),
    ] = None,
    ttl: Annotated[str, typer.Option(help="Credential lifetime: 600, 90s, 10m, 1h")] = "15m",
    purpose: Annotated[
        str | None, typer.Option(help="Why the task runs (audited) [default: the command name]")
    ] = None,
    justification: Annotated[
        str | None, typer.Option(help="Why the credentials are needed [default: the purpose]")
    ] = None,
    heartbeat: Annotated[
        int, typer.Option(help="Heartbeat interval in seconds (a silent task is ended); 0: none")
    ] = 30,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for approval when a grant needs one")
    ] = True,
    approval_timeout: Annotated[
        str, typer.Option(help="How long to wait for approval: 900, 15m, 1h")
    ] = "15m",
    api: Annotated[str, typer.Option("--api", envvar="JITBROKER_API", help="Broker URL")] = (
        DEFAULT_API
    ),
    token_file: Annotated[
        Path | None,
        typer.Option(envvar="JITBROKER_TOKEN_FILE", help="File holding the workload's JWT"),
    ] = None,
    audience: Annotated[
        str,
        typer.Option(envvar="JITBROKER_AUDIENCE", help="Audience of the GitHub Actions token"),
    ] = DEFAULT_AUDIENCE,
) -> None:
    """Run a command with task credentials in its environment; revoke them when it exits."""
    if not command:
        _usage("name a command after --, e.g. jitbroker exec --profile demo-db -- ./export.sh")
    requests = parse_profiles(profile, scope or [DEFAULT_SCOPE])
    grant_ttl = _duration(ttl, "--ttl")
    wait_seconds = _duration(approval_timeout, "--approval-timeout")
    logging.basicConfig(level=logging.WARNING, format="jitbroker: %(message)s", stream=sys.stderr)
    try:
        token_provider = discover_token(token_file=token_file, audience=audience)
    except IdentityTokenUnavailable as exc:
        note(exc.message)
        raise typer.Exit(EXIT_BROKER_FAILURE) from None
    purpose = purpose or f"jitbroker exec {Path(command[0]).name}"
    live = sys.stderr.isatty()
    broker = Broker(
        api,
        token_provider=token_provider,
        long_poll_seconds=LIVE_POLL_SECONDS if live else 25.0,
    )
    try:
        code = run_with_credentials(
            broker,
            argv=command,
            requests=requests,
            purpose=purpose,
            justification=justification or purpose,
            grant_ttl=grant_ttl,
            task_ttl=grant_ttl + (wait_seconds if wait else 0) + TASK_TTL_MARGIN_SECONDS,
            heartbeat=heartbeat or None,
            wait=wait,
            approval_timeout=wait_seconds,
            status_line=ApprovalStatusLine(sys.stderr, live=live),
        )
    finally:
        broker.close()
    raise typer.Exit(code)


def run_with_credentials(
    broker: Broker,
    *,
    argv: Sequence[str],
    requests: Sequence[ProfileRequest],
    purpose: str,
    justification: str,
    grant_ttl: int,
    task_ttl: int,
    heartbeat: int | None,
    wait: bool,
    approval_timeout: float,
    status_line: ApprovalStatusLine,
) -> int:
    """Open a task, obtain the grants, run `argv` with them, complete the task: the exit code."""
    relay = SignalRelay()
    task = broker.task(purpose, ttl=task_ttl, heartbeat=heartbeat)
    with relay.installed():
        try:
            task.open()
            beat = f" (heartbeat {heartbeat}s)" if heartbeat else ""
            note(f"task {task.task_id} opened for {purpose!r}{beat}")
            credentials = []
            for request in requests:
                credential = task.credential(
                    request.profile,
                    scopes=request.scopes,
                    ttl=grant_ttl,
                    justification=justification,
                    wait_for_approval=wait,
                    approval_timeout=approval_timeout,
                    on_status=status_line.show,
                )
                status_line.end()
                note(
                    f"{credential.profile} [{', '.join(credential.scopes)}] issued: grant "
                    f"{credential.grant_id}, {credential.lease_ttl_seconds}s"
                )
                credentials.append(credential)
            assert task.task_id is not None
            env, notes = command_environment(os.environ, credentials, task_id=task.task_id)
            for text in notes:
                note(text)
            code = relay.run(argv, env)
            if task.ended_by_broker:
                note(f"the broker ended the task while the command ran: {task.ended_by_broker}")
        except CommandInterrupted as exc:
            status_line.end()
            note(f"interrupted by {signal.Signals(exc.signum).name} before the command started")
            code = 128 + exc.signum
        except BrokerError as exc:
            status_line.end()
            note(describe_failure(exc))
            code = EXIT_BROKER_FAILURE
        finally:
            relay.hold()
            _complete(task)
    return code


def parse_profiles(values: Sequence[str], default_scopes: Sequence[str]) -> list[ProfileRequest]:
    """`NAME` or `NAME:scope,scope` flags as grant requests; `default_scopes` for bare names."""
    requests: list[ProfileRequest] = []
    for value in values:
        name, _, scopes_text = value.partition(":")
        scopes = [s.strip() for s in scopes_text.split(",") if s.strip()] or list(default_scopes)
        if not name.strip():
            _usage(f"--profile {value!r}: name a profile, e.g. demo-db or demo-db:read,write")
        if any(r.profile == name.strip() for r in requests):
            _usage(f"--profile {name.strip()!r} is named twice; list its scopes once instead")
        requests.append(ProfileRequest(profile=name.strip(), scopes=scopes))
    return requests


def command_environment(
    base: Mapping[str, str], credentials: Sequence[Credential], *, task_id: str
) -> tuple[dict[str, str], list[str]]:
    """The command's environment: `base` without our token, plus each credential's variables."""
    # With several credentials each variable also comes prefixed with its profile
    # (DEMO_DB_PGUSER); a name that two credentials both set is only given prefixed.
    env = {name: value for name, value in base.items() if name not in WITHHELD_VARIABLES}
    variables = [(credential, credential.env()) for credential in credentials]
    counts = Counter(name for _, names in variables for name in names)
    for credential, names in variables:
        prefix = env_name(credential.profile)
        for name, value in names.items():
            if len(credentials) > 1:
                env[f"{prefix}_{name}"] = value
            if counts[name] == 1:
                env[name] = value
    env["JITBROKER_TASK_ID"] = task_id
    shared = sorted(name for name, count in counts.items() if count > 1)
    notes = []
    if shared:
        example = f"{env_name(credentials[0].profile)}_{shared[0]}"
        notes.append(
            f"{', '.join(shared)} would be set by several profiles: only the profile-prefixed "
            f"names are set (e.g. {example})"
        )
    return env, notes


def exit_code_of(returncode: int) -> int:
    """A child's exit code as a shell reports it: 128+N when signal N killed it."""
    return 128 - returncode if returncode < 0 else returncode


def describe_failure(exc: BrokerError) -> str:
    """One line for a failure to obtain credentials."""
    if isinstance(exc, Denied):
        return f"denied (rule {exc.rule or 'none'}): {exc.reason}"
    if isinstance(exc, ApprovalRequired):
        return (
            f"grant {exc.grant_id} needs approval (rule {exc.rule}, approvers: "
            f"{', '.join(exc.approver_groups) or 'none'}); rerun with --wait to wait for it"
        )
    if isinstance(exc, ApprovalTimedOut):
        return f"{exc.message}; the request was withdrawn with the task"
    return exc.message


def note(text: str) -> None:
    """A line for the person or CI log watching: on stderr, never a secret."""
    print(f"jitbroker: {text}", file=sys.stderr, flush=True)


class CommandInterrupted(Exception):
    """A signal arrived before the command started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class SignalRelay:
    """Forwards SIGINT, SIGTERM and SIGHUP to the running command."""

    # Before the command starts they interrupt jitbroker (which still completes the task);
    # while it runs they are forwarded to it; while the task completes they are only noted.

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.forwarding = False
        self.pending: list[int] = []

    @contextmanager
    def installed(self) -> Iterator[SignalRelay]:
        previous = {signum: signal.signal(signum, self._handle) for signum in FORWARDED_SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def run(self, argv: Sequence[str], env: dict[str, str]) -> int:
        """Run the command to its end, forwarding signals: its exit code, shell-style."""
        self.forwarding = True
        try:
            child = subprocess.Popen(list(argv), env=env)
        except FileNotFoundError:
            note(f"command not found: {shlex.quote(argv[0])}")
            return EXIT_NOT_FOUND
        except OSError as exc:
            note(f"command cannot run: {shlex.quote(argv[0])}: {exc.strerror}")
            return EXIT_NOT_EXECUTABLE
        self.child = child
        for signum in self.pending:  # arrived while the command was starting
            child.send_signal(signum)
        return exit_code_of(child.wait())

    def hold(self) -> None:
        """From now on signals are noted, not acted on: the task is being completed."""
        self.forwarding = True
        self.child = None

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        child = self.child
        if child is not None:
            if child.poll() is None:
                child.send_signal(signum)
                note(f"forwarded {signal.Signals(signum).name} to the command")
            return
        if self.forwarding:
            self.pending.append(signum)
            return
        raise CommandInterrupted(signum)


class ApprovalStatusLine:
    """A grant waiting for approval: one line redrawn on a terminal, a line per change in logs."""

    def __init__(self, stream: TextIO, *, live: bool) -> None:
        self.stream = stream
        self.live = live
        self._drawn = False
        self._last: tuple[str, str, int] | None = None

    def show(self, status: ApprovalStatus) -> None:
        if status.state != "pending_approval":
            if self._last is not None:
                self.end()
                note(f"grant {status.grant_id} {status.state}")
            return
        minutes, seconds = divmod(int(status.seconds_left), 60)
        text = (
            f"jitbroker: {status.profile} [{', '.join(status.scopes)}] waits for approval "
            f"(grant {status.grant_id}, rule {status.rule}, {status.approvals_given}/"
            f"{status.approvals_required} from {', '.join(status.approver_groups) or '-'}), "
            f"{minutes}:{seconds:02d} left"
        )
        key = (status.grant_id, status.state, status.approvals_given)
        if self.live:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            self._drawn = True
        elif key != self._last:
            self.stream.write(text + "\n")
            self.stream.flush()
        self._last = key

    def end(self) -> None:
        """Finish a line drawn in place, so the next message starts on its own line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
        self._last = None


def _complete(task: Task) -> None:
    if task.task_id is None:
        return
    try:
        completion = task.complete()
    except BrokerError as exc:
        note(
            f"task {task.task_id} could not be completed: {exc.message}; its heartbeat has "
            "stopped, so the broker ends it and revokes its credentials within one interval"
        )
        return
    count = len(completion.revocations)
    grants = f"{count} grant{'s' if count != 1 else ''}"
    if completion.confirmed:
        note(f"task {task.task_id} completed: {grants} revoked and confirmed")
    else:
        note(f"task {task.task_id} completed: revocation of {grants} still being confirmed")


def _duration(text: str, option: str) -> int:
    try:
        return int(TypeAdapter(Seconds).validate_python(text))
    except ValidationError:
        _usage(f"{option} {text!r}: give seconds or a duration like 90s, 10m, 1h")


def _usage(message: str) -> NoReturn:
    note(message)
    raise typer.Exit(2)
