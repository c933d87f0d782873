"""`jitbroker exec` without a stack: profile flags, the command's environment, exit codes,
and the whole run against a scripted API."""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
import typer
from tests.unit.client.scripted_api import (
    GRANT_ID,
    TASK_ID,
    ScriptedApi,
    grant_body,
    issued,
    pending,
    problem,
)

from jitbroker.cli.exec_command import (
    ApprovalStatusLine,
    CommandInterrupted,
    ProfileRequest,
    SignalRelay,
    command_environment,
    parse_profiles,
    run_with_credentials,
)
from jitbroker.client import ApprovalStatus, Broker, Credential, RetryPolicy

GRANTS = f"/v1/tasks/{TASK_ID}/grants"


def database_credential(profile: str = "demo-db", username: str = "v-ro") -> Credential:
    return Credential(
        grant_id="grt_1",
        task_id=TASK_ID,
        profile=profile,
        engine="database",
        scopes=["read"],
        destination="postgres://127.0.0.1:5432/postgres",
        fields={"username": username, "password": "pw"},
    )


def token_credential() -> Credential:
    return Credential(
        grant_id="grt_2",
        task_id=TASK_ID,
        profile="demo-token",
        engine="token",
        scopes=["read"],
        destination="http://127.0.0.1:8200/v1/secret/data/demo",
        fields={"token": "s.tok", "accessor": "acc"},
    )


@pytest.fixture
def api() -> ScriptedApi:
    return ScriptedApi()


@pytest.fixture
def broker(api: ScriptedApi) -> Broker:
    return Broker(
        "http://broker.test",
        token="workload-jwt",
        transport=httpx.MockTransport(api.handle),
        sleep=lambda _: None,
        retry=RetryPolicy(attempts=2),
    )


def run(broker: Broker, argv: list[str], *profiles: str, wait: bool = True) -> int:
    return run_with_credentials(
        broker,
        argv=argv,
        requests=parse_profiles(list(profiles) or ["demo-db"], ["read"]),
        purpose="unit",
        justification="unit",
        grant_ttl=600,
        task_ttl=1600,
        heartbeat=None,
        wait=wait,
        approval_timeout=900,
        status_line=ApprovalStatusLine(io.StringIO(), live=False),
    )


def test_profile_flags_take_their_own_scopes_or_the_default() -> None:
    assert parse_profiles(["demo-db:read,write", "demo-token"], ["read"]) == [
        ProfileRequest("demo-db", ["read", "write"]),
        ProfileRequest("demo-token", ["read"]),
    ]


def test_a_profile_named_twice_is_a_usage_error() -> None:
    with pytest.raises(typer.Exit) as caught:
        parse_profiles(["demo-db:read", "demo-db:write"], ["read"])

    assert caught.value.exit_code == 2


def test_one_credential_sets_plain_variables_and_withholds_the_workload_token() -> None:
    env, notes = command_environment(
        {"PATH": "/bin", "JITBROKER_TOKEN": "jwt", "JITBROKER_ID_TOKEN": "gitlab-jwt"},
        [database_credential()],
        task_id=TASK_ID,
    )

    assert env["PGUSER"] == "v-ro"
    assert env["DATABASE_URL"] == "postgresql://v-ro:pw@127.0.0.1:5432/postgres"
    assert env["JITBROKER_TASK_ID"] == TASK_ID
    assert env["PATH"] == "/bin"
    assert "JITBROKER_TOKEN" not in env
    assert "JITBROKER_ID_TOKEN" not in env
    assert "DEMO_DB_PGUSER" not in env
    assert notes == []


def test_several_credentials_are_also_prefixed_by_profile() -> None:
    env, _ = command_environment({}, [database_credential(), token_credential()], task_id=TASK_ID)

    assert (env["PGUSER"], env["DEMO_DB_PGUSER"]) == ("v-ro", "v-ro")
    assert (env["VAULT_TOKEN"], env["DEMO_TOKEN_VAULT_TOKEN"]) == ("s.tok", "s.tok")


def test_a_variable_two_profiles_set_is_only_given_prefixed() -> None:
    env, notes = command_environment(
        {},
        [database_credential("orders-db", "v-a"), database_credential("billing-db", "v-b")],
        task_id=TASK_ID,
    )

    assert "PGUSER" not in env
    assert (env["ORDERS_DB_PGUSER"], env["BILLING_DB_PGUSER"]) == ("v-a", "v-b")
    assert notes[0].startswith("DATABASE_URL, PGDATABASE, PGHOST, PGPASSWORD, PGPORT, PGUSER")


def test_exit_code_is_the_commands() -> None:
    with SignalRelay().installed() as relay:
        assert relay.run([sys.executable, "-c", "raise SystemExit(3)"], {}) == 3


def test_command_killed_by_a_signal_exits_128_plus_the_signal() -> None:
    with SignalRelay().installed() as relay:
        code = relay.run(["sh", "-c", "kill -TERM $$"], {})

    assert code == 128 + signal.SIGTERM


def test_missing_command_exits_127() -> None:
    with SignalRelay().installed() as relay:
        assert relay.run(["/nonexistent/command"], {}) == 127


def test_signal_before_the_command_starts_interrupts_jitbroker() -> None:
    with SignalRelay().installed(), pytest.raises(CommandInterrupted) as caught:
        os.kill(os.getpid(), signal.SIGHUP)

    assert caught.value.signum == signal.SIGHUP


def test_sigterm_while_waiting_for_approval_exits_143_and_completes_the_task(
    api: ScriptedApi, broker: Broker
) -> None:
    def terminated_while_polling(request: httpx.Request) -> httpx.Response:
        os.kill(os.getpid(), signal.SIGTERM)
        return pending(200)

    api.script("POST", GRANTS, pending())
    api.script("GET", f"/v1/grants/{GRANT_ID}", terminated_while_polling)

    assert run(broker, ["true"], "demo-db:write") == 128 + signal.SIGTERM
    assert len(api.calls("POST", f"/v1/tasks/{TASK_ID}/complete")) == 1


def test_command_runs_with_the_credential_and_the_task_is_completed(
    api: ScriptedApi, broker: Broker
) -> None:
    api.script("POST", GRANTS, issued())
    check = 'test "$PGUSER" = v-demo-ro-abc && test "$JITBROKER_TASK_ID" = tsk_unit'

    assert run(broker, ["sh", "-c", check]) == 0
    assert len(api.calls("POST", f"/v1/tasks/{TASK_ID}/complete")) == 1


def test_denied_grant_exits_125_without_running_the_command(
    api: ScriptedApi, broker: Broker, tmp_path: Path
) -> None:
    api.script("POST", GRANTS, problem(403, "no rule matched", rule="default-deny"))

    assert run(broker, ["touch", str(tmp_path / "ran")]) == 125
    assert not (tmp_path / "ran").exists()
    assert len(api.calls("POST", f"/v1/tasks/{TASK_ID}/complete")) == 1


def test_no_wait_on_a_grant_needing_approval_exits_125(api: ScriptedApi, broker: Broker) -> None:
    api.script("POST", GRANTS, pending())

    assert run(broker, ["true"], "demo-db:write", wait=False) == 125
    assert len(api.calls("POST", f"/v1/tasks/{TASK_ID}/complete")) == 1


def test_status_line_prints_each_change_when_not_on_a_terminal() -> None:
    stream = io.StringIO()
    line = ApprovalStatusLine(stream, live=False)
    waiting = ApprovalStatus.of(pending().json(), 600)

    line.show(waiting)
    line.show(waiting)
    line.show(ApprovalStatus.of(grant_body("approved"), 590))

    (printed,) = stream.getvalue().splitlines()
    assert "demo-db [read] waits for approval" in printed
    assert "rule demo-db-elevated, 0/1 from dba), 10:00 left" in printed
