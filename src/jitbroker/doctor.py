"""`jitbroker doctor`: check a deployment's OpenBao, Redis, clock and signing key, with fixes."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jitbroker.config import BrokerConfig, ProfileConfig, Settings, load_config
from jitbroker.errors import BrokerError, ConfigError, VaultUnavailable
from jitbroker.redis_client import connect_redis
from jitbroker.signing import BrokerSigningKey
from jitbroker.vault import VaultClient
from jitbroker.vault_policy import ENGINE_TEMPLATES, required_paths, role_path

MAX_CLOCK_SKEW_SECONDS = 5.0
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Fields OpenBao roles use for their hard TTL cap, by engine (database, pki, ssh: max_ttl;
# token roles: token_explicit_max_ttl, older ones explicit_max_ttl).
CAP_FIELDS = ("max_ttl", "token_explicit_max_ttl", "explicit_max_ttl", "token_max_ttl")
GO_DURATION = re.compile(r"(\d+)(h|m|s)")
POLICY_FIX = (
    "regenerate and load the broker's policy: `jitbroker openbao policy --config DIR > "
    "jitbroker-policy.hcl && bao policy write jitbroker jitbroker-policy.hcl`, and attach it to "
    "the broker's token or Kubernetes auth role"
)


class Status(StrEnum):
    """How a check came out: `warn` is worth fixing but does not fail the doctor."""

    passed = "pass"
    warning = "warn"
    failed = "fail"


@dataclass(frozen=True)
class CheckResult:
    """One check: what was looked at, how it came out, and how to fix it when it did not pass."""

    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class DoctorReport:
    """Every check's result; the deployment is healthy when none failed."""

    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status != Status.failed for r in self.results)

    def named(self, name: str) -> CheckResult:
        """The result of the check called `name`."""
        return next(r for r in self.results if r.name == name)

    def count(self, status: Status) -> int:
        return sum(r.status == status for r in self.results)


def _passed(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Status.passed, detail)


def _warned(name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(name, Status.warning, detail, fix)


def _failed(name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(name, Status.failed, detail, fix)


def duration_seconds(value: Any) -> int:
    """OpenBao's TTL fields: seconds as a number, or a Go duration like "1h30m0s"."""
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in GO_DURATION.findall(text))


def check_openbao(vault: VaultClient) -> CheckResult:
    """OpenBao answers, is unsealed and accepts the broker's token."""
    name = "openbao"
    try:
        token = vault.lookup_self()
    except VaultUnavailable:
        return _failed(
            name,
            f"OpenBao at {vault.addr} does not answer",
            "check JITBROKER_VAULT_ADDR, that OpenBao is unsealed, and that a NetworkPolicy or "
            "firewall lets the broker reach it",
        )
    except BrokerError as exc:
        login = (
            f"the Kubernetes login (role {vault.auth.kubernetes_role!r} on auth/"
            f"{vault.auth.kubernetes_mount}) failed or its token"
            if vault.auth.method == "kubernetes"
            else "the token in JITBROKER_VAULT_TOKEN"
        )
        return _failed(
            name,
            f"OpenBao at {vault.addr} refused {login}: {exc.detail}",
            "give the broker a valid token (a periodic token with the jitbroker policy), or bind "
            "its service account to the Kubernetes auth role",
        )
    policies = [str(p) for p in token.get("policies") or []]
    ttl = int(token.get("ttl") or 0)
    lifetime = "does not expire" if ttl == 0 else f"ttl {ttl}s"
    renewable = ", renewable" if token.get("renewable") else ""
    detail = f"{vault.addr}: authenticated ({lifetime}{renewable}; policies {policies})"
    if "root" in policies:
        return _warned(
            name,
            detail + ": a root token",
            "run the broker under the least-privilege policy (deploy/openbao/), not root",
        )
    if ttl and not token.get("renewable"):
        return _warned(
            name,
            detail + ": it cannot be renewed and stops working when its TTL runs out",
            "use a renewable periodic token, or Kubernetes auth",
        )
    return _passed(name, detail)


def check_roles(vault: VaultClient, config: BrokerConfig) -> list[CheckResult]:
    """Every profile's roles exist, and their TTL caps fit the profile's cap."""
    results: list[CheckResult] = []
    for profile in sorted(config.profiles.values(), key=lambda p: p.id):
        for scope in profile.scopes:
            results.append(_check_role(vault, profile, scope.name, scope.role))
    return results


def _check_role(vault: VaultClient, profile: ProfileConfig, scope: str, role: str) -> CheckResult:
    name = f"role {profile.id}/{scope}"
    path = role_path(profile, role)
    try:
        found = vault.read_optional(path)
    except VaultUnavailable:
        return _failed(name, f"OpenBao did not answer reading {path}", "see the openbao check")
    except BrokerError:
        found = None
        refused = True
    else:
        refused = False
    if found is None:
        why = "missing, or the broker's policy may not read it" if refused else "missing"
        return _failed(
            name,
            f"profile {profile.id!r} scope {scope!r} names role {role!r}, but {path} is {why}",
            f"create the role at {path} (with max_ttl {profile.max_ttl_seconds}s), or correct the "
            f"role in the profile; then {POLICY_FIX}",
        )
    data = found.get("data") or {}
    caps = [duration_seconds(data.get(f)) for f in CAP_FIELDS if f in data]
    cap = min((c for c in caps if c > 0), default=0)
    if cap == 0:
        return _failed(
            name,
            f"role {role!r} sets no max TTL: its leases fall back to the mount's or OpenBao's "
            "maximum, so OpenBao does not bound them by the profile cap",
            f"set max_ttl={profile.max_ttl_seconds}s on {path}",
        )
    if cap < profile.max_ttl_seconds:
        return _failed(
            name,
            f"role {role!r} caps leases at {cap}s, below the max_ttl_seconds of profile "
            f"{profile.id!r}, {profile.max_ttl_seconds}s: longer grants would get shorter leases",
            f"raise the role's max TTL to {profile.max_ttl_seconds}s, or lower the profile's "
            f"max_ttl_seconds to {cap}",
        )
    template = ENGINE_TEMPLATES.get(profile.engine)
    initial = duration_seconds(data.get("default_ttl")) if "default_ttl" in data else None
    if template is not None and template.lease_prefix is not None and initial is not None:
        if initial == 0 or initial > profile.max_ttl_seconds:
            return _warned(
                name,
                f"role {role!r} has default_ttl {initial or 'unset'}: a credential issued just "
                "before a broker crash lives that long before OpenBao revokes it",
                f"set default_ttl on {path} to a short value (e.g. 30s); the broker sets each "
                "lease to its grant's TTL right after issuing",
            )
    if cap > profile.max_ttl_seconds:
        return _warned(
            name,
            f"role {role!r} caps leases at {cap}s, above the cap of profile {profile.id!r}, "
            f"{profile.max_ttl_seconds}s (the broker never asks for more)",
            f"give the profile its own role with max_ttl={profile.max_ttl_seconds}s so OpenBao "
            "enforces the cap too",
        )
    return _passed(name, f"role {role!r} exists, max TTL {cap}s = the profile cap")


def check_policy(vault: VaultClient, config: BrokerConfig) -> CheckResult:
    """The broker's token may do everything its profiles need (sys/capabilities-self)."""
    name = "openbao policy"
    needed = required_paths(config)
    try:
        held = vault.capabilities_self([rule.probe_path() for rule in needed])
    except BrokerError as exc:
        return _failed(
            name, f"cannot ask OpenBao for the token's capabilities: {exc.detail}", POLICY_FIX
        )
    missing = []
    for rule in needed:
        have = set(held.get(rule.probe_path(), []))
        if "root" in have:
            continue
        lacking = [c for c in rule.capabilities if c not in have]
        if lacking:
            missing.append(f"{rule.path} ({', '.join(lacking)})")
    if missing:
        return _failed(
            name,
            f"the broker's token lacks {len(missing)} of {len(needed)} needed paths: "
            + "; ".join(missing),
            POLICY_FIX,
        )
    return _passed(
        name, f"the token holds every capability the profiles need ({len(needed)} paths)"
    )


def check_clock(vault: VaultClient, clock: Callable[[], datetime]) -> CheckResult:
    """The local clock agrees with OpenBao's (lease and token expiry depend on it)."""
    name = "clock"
    before = clock()
    try:
        server = vault.server_time()
    except BrokerError as exc:
        return _failed(name, f"cannot read OpenBao's clock: {exc.detail}", "see the openbao check")
    after = clock()
    local = before + (after - before) / 2
    # The Date header has whole seconds: allow for the truncation.
    skew = (server - local).total_seconds() + 0.5
    if abs(skew) > MAX_CLOCK_SKEW_SECONDS + 0.5:
        return _failed(
            name,
            f"the local clock is {abs(skew):.1f}s {'behind' if skew > 0 else 'ahead of'} "
            f"OpenBao's (at most {MAX_CLOCK_SKEW_SECONDS:.0f}s allowed): expiry times and "
            "token validation disagree",
            "run NTP (chrony or systemd-timesyncd) on the nodes of both the broker and OpenBao",
        )
    return _passed(name, f"within {max(abs(skew) - 0.5, 0):.1f}s of OpenBao's clock")


def _is_dev_redis(url: str) -> bool:
    try:
        return urlsplit(url).hostname in LOOPBACK_HOSTS
    except ValueError:
        return False


def check_redis(client: redis.Redis, url: str, *, name: str = "redis") -> list[CheckResult]:
    """Redis answers and keeps its data across restarts (AOF on)."""
    where = _redacted(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        return [
            _failed(
                name,
                f"{where} does not answer: {type(exc).__name__}",
                "check JITBROKER_REDIS_URL (for Sentinel: redis+sentinel://host:26379,…/master) "
                "and that the broker may reach Redis",
            )
        ]
    results = [_passed(name, f"{where} answers")]
    persistence = f"{name} persistence"
    try:
        appendonly = _config_value(client, "appendonly")
        save = _config_value(client, "save")
    except redis.RedisError:
        results.append(
            _warned(
                persistence,
                "cannot read the persistence settings (CONFIG GET is not allowed here)",
                "make sure AOF (appendonly yes) or your provider's equivalent is on: the expiry "
                "ledger and grant states live in Redis",
            )
        )
        return results
    fix = (
        "turn on AOF: `appendonly yes` in redis.conf (or CONFIG SET appendonly yes, then CONFIG "
        "REWRITE); the chart's trial Redis has it on"
    )
    if appendonly == "yes":
        results.append(_passed(persistence, "AOF is on"))
    elif save:
        results.append(
            _warned(
                persistence,
                f"only RDB snapshots (save {save!r}): a crash loses the changes since the last one",
                fix,
            )
        )
    elif _is_dev_redis(url):
        results.append(
            _warned(persistence, "off (a loopback dev instance): a restart loses all state", fix)
        )
    else:
        results.append(
            _failed(
                persistence,
                "off: a Redis restart loses every grant, lease record and the expiry ledger",
                fix,
            )
        )
    return results


def _config_value(client: redis.Redis, key: str) -> str:
    answer: Any = client.config_get(key)
    value = answer.get(key, answer.get(key.encode(), "")) if isinstance(answer, dict) else ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


def check_signing_key(path: Path) -> CheckResult:
    """The broker's Ed25519 signing key is present and loads."""
    name = "signing key"
    fix = (
        "create one (`openssl genpkey -algorithm ed25519 -out signing-key.pem`), store it in a "
        "Secret and point JITBROKER_SIGNING_KEY_FILE at it (the chart's signingKey.secretName)"
    )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        return _failed(name, f"no key at {path}", fix)
    except (OSError, ValueError, TypeError) as exc:
        return _failed(name, f"{path} cannot be loaded: {type(exc).__name__}", fix)
    if not isinstance(key, Ed25519PrivateKey):
        return _failed(name, f"{path} does not hold an Ed25519 private key", fix)
    return _passed(name, f"{path}: Ed25519, key id {BrokerSigningKey(key).key_id}")


def run_doctor(
    settings: Settings,
    *,
    vault: VaultClient | None = None,
    redis_client: redis.Redis | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> DoctorReport:
    """Run every check against the deployment `settings` describe."""
    report = DoctorReport()
    config: BrokerConfig | None = None
    try:
        config = load_config(settings.config_dir)
    except ConfigError as exc:
        report.results.append(
            _failed(
                "config",
                str(exc),
                f"fix the file, then `jitbroker config check {settings.config_dir}`",
            )
        )
    else:
        report.results.append(
            _passed("config", f"{settings.config_dir}: {len(config.profiles)} profiles")
        )
    vault = vault or VaultClient.from_settings(settings)
    openbao = check_openbao(vault)
    report.results.append(openbao)
    if openbao.status != Status.failed:
        if config is not None:
            report.results.extend(check_roles(vault, config))
            report.results.append(check_policy(vault, config))
        report.results.append(check_clock(vault, clock))
    state = redis_client or connect_redis(
        settings.redis_url, socket_timeout=5, socket_connect_timeout=5
    )
    report.results.extend(check_redis(state, settings.redis_url))
    if settings.task_queue_url != settings.redis_url:
        queue = connect_redis(settings.task_queue_url, socket_timeout=5, socket_connect_timeout=5)
        report.results.extend(check_redis(queue, settings.task_queue_url, name="celery redis"))
    report.results.append(check_signing_key(settings.signing_key_file))
    if settings.signing_previous_key_file is not None:
        previous = check_signing_key(settings.signing_previous_key_file)
        report.results.append(replace(previous, name="previous signing key"))
    return report
