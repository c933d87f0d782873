"""Runtime settings (environment) and the configuration directory (YAML, validated at start-up)."""

from __future__ import annotations

import logging
import re
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import cel
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from jitbroker.errors import ConfigError

Algorithm = Literal[
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
]
DURATION = re.compile(r"^(\d+)([smhd]?)$")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
LOOPBACK_HTTP = ("http://127.0.0.1:", "http://127.0.0.1/", "http://localhost:", "http://[::1]:")
SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
Capability = Literal["read", "write", "admin", "impersonation", "cross_tenant"]
WorkloadKind = Literal["pipeline", "agent", "service", "integration"]
EngineKind = Literal["database", "token", "pki", "ssh", "redis"]
# An SSH certificate principal: a login name, no commas (OpenBao joins them with commas).
SshPrincipal = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}$")]
# A scope named like a capability gets that capability; any other name must declare its own.
CAPABILITY_OF_SCOPE_NAME: dict[str, Capability] = {
    "read": "read",
    "write": "write",
    "admin": "admin",
}
DEFAULT_REVIEW_EVERY_SECONDS = 90 * 86400


class Settings(BaseSettings):
    """Process settings, read from JITBROKER_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="JITBROKER_", extra="ignore")

    config_dir: Path = Path("examples/dev")
    config_reload_seconds: float = Field(default=5.0, ge=0)
    redis_url: str = "redis://127.0.0.1:6379/0"
    celery_broker_url: str | None = None
    key_prefix: str = "jb"
    vault_addr: str = "http://127.0.0.1:8200"
    vault_token: SecretStr = SecretStr("")
    vault_timeout_seconds: float = 5.0
    # `kubernetes`: log in with the pod's service-account token (and renew the broker's token).
    vault_auth_method: Literal["token", "kubernetes"] = "token"
    vault_kubernetes_role: str = ""
    vault_kubernetes_mount: str = "kubernetes"
    vault_kubernetes_token_path: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    vault_ca_cert: Path | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = 8400
    # API server processes (uvicorn workers) sharing the listen port; one per CPU is plenty.
    api_workers: int = Field(default=1, ge=1)
    dev_issuer_dir: Path | None = None
    signing_key_file: Path = Path(".dev/broker-signing-key.pem")
    # During a key rotation: the retiring key, still published and still recognised.
    signing_previous_key_file: Path | None = None
    default_task_ttl_seconds: int = Field(default=3600, gt=0)
    max_task_ttl_seconds: int = Field(default=86400, gt=0)
    complete_wait_seconds: float = Field(default=30.0, gt=0)
    revocation_redelivery_seconds: int = Field(default=30, gt=0)
    revocation_incident_seconds: int = Field(default=60, gt=0)
    revocation_failure_budget: int = Field(default=5, ge=0)
    reconcile_interval_seconds: float = Field(default=60.0, gt=0)
    orphan_grace_seconds: int = Field(default=120, ge=0)
    sweep_interval_seconds: float = Field(default=0.2, gt=0)
    sweep_batch_size: int = Field(default=500, gt=0)
    idempotency_ttl_seconds: int = Field(default=86400, gt=0)
    idempotency_claim_seconds: int = Field(default=60, gt=0)
    approval_issue_window_seconds: int = Field(default=600, gt=0)
    review_grace_seconds: int = Field(default=7 * 86400, ge=0)
    review_check_interval_seconds: float = Field(default=60.0, gt=0)
    long_poll_max_seconds: int = Field(default=60, gt=0)
    # Requests per workload id per minute (fixed window in Redis); 0 disables the limit.
    rate_limit_per_minute: int = Field(default=600, ge=0)
    # Per-connection HTTP limits (connection_limits.py): a request's line and headers must arrive
    # within this many seconds and bytes (above the 8 KiB bearer cap, so it gets its own 401), its
    # body within its own deadline; slower or larger requests get 408/431 and a closed connection.
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    http_body_timeout_seconds: float = Field(default=30.0, gt=0)
    http_max_header_bytes: int = Field(default=16 * 1024, ge=12 * 1024)
    break_glass_min_justification: int = Field(default=20, ge=1)
    admin_groups: list[str] = Field(default_factory=lambda: ["platform-admins"])
    audit_stdout: bool = True
    audit_file: Path | None = Path(".dev/audit.jsonl")
    audit_checkpoint_every: int = Field(default=100, gt=0)
    log_level: str = "INFO"

    @property
    def task_queue_url(self) -> str:
        """Where Celery messages go: `celery_broker_url`, else the state Redis."""
        return self.celery_broker_url or self.redis_url

    @field_validator("audit_file", mode="before")
    @classmethod
    def _blank_audit_file_disables_it(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("vault_ca_cert", "signing_previous_key_file", mode="before")
    @classmethod
    def _blank_ca_cert_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _kubernetes_auth_names_a_role(self) -> Settings:
        if self.vault_auth_method == "kubernetes" and not self.vault_kubernetes_role:
            raise ValueError(
                "JITBROKER_VAULT_KUBERNETES_ROLE is required with JITBROKER_VAULT_AUTH_METHOD="
                "kubernetes"
            )
        return self


class IssuerConfig(BaseModel):
    """A trusted token issuer: exact `iss`, its keys, audiences and pinned algorithms."""

    model_config = ConfigDict(extra="forbid")

    name: str
    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(min_length=1)
    algorithms: list[Algorithm] = Field(min_length=1)
    jwks_url: str | None = None
    jwks_file: Path | None = None
    human: bool = False
    groups_claim: str = "groups"
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    max_token_lifetime_seconds: int = Field(default=86400, gt=0)
    jwks_cache_seconds: int = Field(default=300, ge=1)
    jwks_min_refresh_seconds: float = Field(default=10.0, ge=0)
    # Refuse a second use of the same `jti` within the token's lifetime (tokens must carry one).
    single_use_jti: bool = False

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        return _check_slug(value)

    @model_validator(mode="after")
    def _one_key_source(self) -> IssuerConfig:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("exactly one of jwks_url or jwks_file is required")
        if self.jwks_url is not None and not self.jwks_url.startswith("https://"):
            # Keys fetched in clear text can be swapped on the way; only loopback may skip TLS.
            if not self.jwks_url.startswith(LOOPBACK_HTTP):
                raise ValueError("jwks_url must use https:// (plain http only on loopback)")
        return self


def _seconds(value: Any) -> Any:
    """Accept 90, "90s", "15m", "2h" or "1d" for a duration in seconds."""
    if isinstance(value, str):
        match = DURATION.match(value.strip())
        if not match:
            raise ValueError(f"{value!r} is not a duration like 90, '90s', '15m', '2h' or '1d'")
        return int(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]
    return value


Seconds = Annotated[int, BeforeValidator(_seconds), Field(gt=0)]


class WorkloadConfig(BaseModel):
    """A registered workload, bound to tokens by issuer + subject + exact-match claims."""

    model_config = ConfigDict(extra="forbid")

    id: str
    issuer: str
    subject: str = Field(min_length=1)
    audience: str | None = None
    claims: dict[str, str | int | bool] = Field(default_factory=dict)
    description: str = ""
    owner_team: str = ""
    custodian: str = ""
    backup_approver: str = ""
    purpose: str = ""
    environment: str = "dev"
    kind: WorkloadKind | None = None
    review_every: Seconds = DEFAULT_REVIEW_EVERY_SECONDS
    expires_on: date | None = None

    @field_validator("id", "environment")
    @classmethod
    def _slug(cls, value: str) -> str:
        return _check_slug(value)

    @field_validator("owner_team", "custodian", "backup_approver", "purpose")
    @classmethod
    def _stripped(cls, value: str) -> str:
        return value.strip()

    @property
    def missing_inventory(self) -> list[str]:
        """The accountability fields left empty; any of them makes the workload `unowned`."""
        return [name for name in ("owner_team", "purpose") if not getattr(self, name)]

    @property
    def unowned(self) -> bool:
        return bool(self.missing_inventory)


class ScopeBinding(BaseModel):
    """One scope of a profile and the OpenBao role that implements it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    role: str = Field(min_length=1)
    capabilities: list[Capability] = Field(default_factory=list)
    # ssh profiles only: the certificate's valid principals (default: the workload id).
    principals: list[SshPrincipal] = Field(default_factory=list, max_length=32)

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        return _check_slug(value)

    @model_validator(mode="after")
    def _capabilities_known(self) -> ScopeBinding:
        if not self.capabilities:
            default = CAPABILITY_OF_SCOPE_NAME.get(self.name)
            if default is None:
                raise ValueError(
                    f"scope {self.name!r} needs `capabilities` (a subset of "
                    "read, write, admin, impersonation, cross_tenant); only scopes named read, "
                    "write or admin get one by default"
                )
            self.capabilities = [default]
        return self


class ProfileConfig(BaseModel):
    """What a grant can be for: an engine, its scopes (least privileged first) and a TTL cap."""

    model_config = ConfigDict(extra="forbid")

    id: str
    engine: EngineKind
    mount: str = Field(min_length=1)
    destination: str = Field(min_length=1)
    destinations: list[str] = Field(default_factory=list)
    max_ttl_seconds: int = Field(gt=0, le=7 * 86400)
    scopes: list[ScopeBinding] = Field(min_length=1)
    monitor_dsn_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    description: str = ""
    environment: str = "dev"

    @field_validator("id", "environment")
    @classmethod
    def _slug(cls, value: str) -> str:
        return _check_slug(value)

    @field_validator("mount")
    @classmethod
    def _clean_mount(cls, value: str) -> str:
        return value.strip("/")

    @model_validator(mode="after")
    def _unique_scopes(self) -> ProfileConfig:
        names = [s.name for s in self.scopes]
        if len(names) != len(set(names)):
            raise ValueError(f"scopes must be unique, got {names}")
        if self.engine != "ssh" and any(s.principals for s in self.scopes):
            raise ValueError("only ssh profiles take `principals` on their scopes")
        return self

    def scope_names(self) -> list[str]:
        return [s.name for s in self.scopes]

    def route_patterns(self) -> list[str]:
        """Where a grant of this profile may go (fnmatch patterns); `destination` by default."""
        return self.destinations or [self.destination]

    def binding_for(self, scopes: list[str]) -> ScopeBinding:
        """The most privileged of the requested scopes (profile order is least to most)."""
        order = self.scope_names()
        return self.scopes[max(order.index(s) for s in scopes)]

    def capabilities_of(self, scopes: list[str]) -> list[Capability]:
        """Every capability the named scopes grant, without repeats, in profile order."""
        found: list[Capability] = []
        for binding in self.scopes:
            if binding.name in scopes:
                found += [c for c in binding.capabilities if c not in found]
        return found


class RuleConfig(BaseModel):
    """A policy rule: a CEL `when` condition and an effect; first match wins."""

    model_config = ConfigDict(extra="forbid")

    name: str
    when: str = "true"
    effect: Literal["allow", "deny", "require_approval"]
    reason: str = ""
    max_ttl: Seconds | None = None
    approvals: int = Field(default=1, ge=1, le=10)
    approver_groups: list[str] = Field(default_factory=list)
    approval_ttl: Seconds = 900
    break_glass: bool = False
    break_glass_max_ttl: Seconds = 900
    allow_privileged: bool = False
    _program: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _approval_fields_fit_the_effect(self) -> RuleConfig:
        if self.effect == "require_approval" and not self.approver_groups:
            raise ValueError("a require_approval rule needs approver_groups")
        if self.effect != "require_approval" and self.break_glass:
            raise ValueError("break_glass only applies to require_approval")
        # On an allow rule, approver_groups approve the privileged requests it matches.
        if self.effect == "deny" and self.approver_groups:
            raise ValueError("approver_groups only apply to require_approval and allow")
        if self.effect != "allow" and self.allow_privileged:
            raise ValueError("allow_privileged only applies to allow")
        return self

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        return _check_slug(value)

    @model_validator(mode="after")
    def _compile_when(self) -> RuleConfig:
        try:
            self._program = cel.compile(self.when)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"'when' is not valid CEL: {exc}") from None
        return self

    @property
    def program(self) -> Any:
        """The CEL program, compiled once when the rule was loaded."""
        return self._program


class DevHumanConfig(BaseModel):
    """A human the dev issuer can mint tokens for (dev stack only)."""

    model_config = ConfigDict(extra="forbid")

    subject: str
    email: str = ""
    groups: list[str] = Field(default_factory=list)
    issuer: str


class WebhookConfig(BaseModel):
    """Where notifications go; the signing secret comes from an environment variable."""

    model_config = ConfigDict(extra="forbid")

    name: str
    url: str
    secret_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    events: list[str] = Field(default_factory=lambda: ["*"])

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        return _check_slug(value)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", *LOOPBACK_HTTP)):
            raise ValueError("url must use https:// (plain http only on loopback)")
        return value


class PolicyTestCase(BaseModel):
    """A sample request and the decision the policy must reach for it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    workload: str
    request: dict[str, Any]
    context: dict[str, Any] = Field(default_factory=dict)
    expect: Literal["allow", "deny", "require_approval"]
    rule: str | None = None
    signed_off: bool = True


SECTIONS: dict[str, type[BaseModel]] = {
    "issuers": IssuerConfig,
    "workloads": WorkloadConfig,
    "profiles": ProfileConfig,
    "rules": RuleConfig,
    "webhooks": WebhookConfig,
    "policy_tests": PolicyTestCase,
    "dev_humans": DevHumanConfig,
}
ID_FIELD = {
    "issuers": "name",
    "workloads": "id",
    "profiles": "id",
    "rules": "name",
    "webhooks": "name",
    "policy_tests": "name",
    "dev_humans": "subject",
}


class BrokerConfig(BaseModel):
    """Everything loaded from the configuration directory."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    directory: Path
    issuers: dict[str, IssuerConfig]
    workloads: dict[str, WorkloadConfig]
    profiles: dict[str, ProfileConfig]
    rules: list[RuleConfig]
    webhooks: dict[str, WebhookConfig] = Field(default_factory=dict)
    policy_tests: list[PolicyTestCase] = Field(default_factory=list)
    dev_humans: dict[str, DevHumanConfig]


def _check_slug(value: str) -> str:
    if not SLUG.match(value):
        raise ValueError(
            f"{value!r} must be lowercase letters, digits, '.', '_' or '-' (at most 63)"
        )
    return value


def _describe_location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(entry)"


def load_config(directory: Path) -> BrokerConfig:
    """Load and validate every *.yaml in `directory`; errors name the file, entry and field."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: configuration directory not found")
    found: dict[str, list[tuple[Path, int, BaseModel]]] = {name: [] for name in SECTIONS}
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise ConfigError(f"{directory}: no *.yaml files")
    for path in files:
        for section, index, entry in _read_file(path):
            found[section].append((path, index, entry))

    def unique(section: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        where: dict[str, str] = {}
        for path, index, entry in found[section]:
            key = getattr(entry, ID_FIELD[section])
            here = f"{path.name}: {section}[{index}]"
            if key in result:
                raise ConfigError(
                    f"{here} ({ID_FIELD[section]} {key!r}): duplicate, "
                    f"first defined at {where[key]}"
                )
            result[key] = entry
            where[key] = here
        return result

    issuers: dict[str, IssuerConfig] = unique("issuers")
    workloads: dict[str, WorkloadConfig] = unique("workloads")
    profiles: dict[str, ProfileConfig] = unique("profiles")
    unique("rules")
    unique("policy_tests")
    webhooks: dict[str, WebhookConfig] = unique("webhooks")
    dev_humans: dict[str, DevHumanConfig] = unique("dev_humans")
    rules = [entry for _, _, entry in found["rules"] if isinstance(entry, RuleConfig)]
    policy_tests = [e for _, _, e in found["policy_tests"] if isinstance(e, PolicyTestCase)]

    locations = {
        (section, getattr(entry, ID_FIELD[section])): f"{path.name}: {section}[{index}]"
        for section in SECTIONS
        for path, index, entry in found[section]
    }
    for issuer in issuers.values():
        if issuer.jwks_file is not None and not issuer.jwks_file.is_absolute():
            issuer.jwks_file = (directory / issuer.jwks_file).resolve()
    by_iss: dict[str, str] = {}
    for issuer in issuers.values():
        if issuer.issuer in by_iss:
            raise ConfigError(
                f"{locations[('issuers', issuer.name)]} (name {issuer.name!r}): field 'issuer': "
                f"{issuer.issuer!r} is already used by issuer {by_iss[issuer.issuer]!r}"
            )
        by_iss[issuer.issuer] = issuer.name
    for workload in workloads.values():
        issuer_ref = issuers.get(workload.issuer)
        if issuer_ref is None or issuer_ref.human:
            raise ConfigError(
                f"{locations[('workloads', workload.id)]} (id {workload.id!r}): field 'issuer': "
                f"no workload issuer named {workload.issuer!r}"
            )
    for human in dev_humans.values():
        if human.issuer not in issuers or not issuers[human.issuer].human:
            raise ConfigError(
                f"{locations[('dev_humans', human.subject)]} (subject {human.subject!r}): "
                f"field 'issuer': no human issuer named {human.issuer!r}"
            )
    return BrokerConfig(
        directory=directory,
        issuers=issuers,
        workloads=workloads,
        profiles=profiles,
        rules=rules,
        webhooks=webhooks,
        policy_tests=policy_tests,
        dev_humans=dev_humans,
    )


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses repeated keys, which plain YAML silently collapses."""


def _construct_unique_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_unique_mapping,
)


def _read_file(path: Path) -> list[tuple[str, int, BaseModel]]:
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path.name}: cannot be read as UTF-8 text: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML: {exc}") from None
    if document is None:
        return []
    if not isinstance(document, dict):
        raise ConfigError(f"{path.name}: top level must be a mapping of sections")
    entries: list[tuple[str, int, BaseModel]] = []
    for section, items in document.items():
        model = SECTIONS.get(section)
        if model is None:
            raise ConfigError(
                f"{path.name}: unknown section {section!r} (expected one of {sorted(SECTIONS)})"
            )
        if not isinstance(items, list):
            raise ConfigError(f"{path.name}: section {section!r} must be a list")
        for index, raw in enumerate(items):
            label = raw.get(ID_FIELD[section]) if isinstance(raw, dict) else None
            entry_name = f"{path.name}: {section}[{index}]" + (
                f" ({ID_FIELD[section]} {label!r})" if label else ""
            )
            try:
                entries.append((section, index, model.model_validate(raw)))
            except ValidationError as exc:
                problems = "; ".join(
                    f"field '{_describe_location(err['loc'])}': {err['msg']}"
                    for err in exc.errors()
                )
                raise ConfigError(f"{entry_name}: {problems}") from None
    return entries


def configure_logging(settings: Settings) -> None:
    """Root logging at the configured level, to stderr (a no-op once something configured it)."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
