"""The least-privilege OpenBao policy the broker needs, derived from its profiles."""

from __future__ import annotations

from dataclasses import dataclass, field

from jitbroker.config import BrokerConfig, ProfileConfig

CAPABILITY_ORDER = ("create", "read", "update", "patch", "delete", "list", "sudo")
HEADER = """\
# jitbroker: the least-privilege OpenBao/Vault policy for the broker's own token.
# Generated from the profiles of a configuration directory by
#   jitbroker openbao policy --config DIR > jitbroker-policy.hcl
# Regenerate it whenever a profile's engine, mount or roles change, and load it with
#   bao policy write jitbroker jitbroker-policy.hcl
"""


@dataclass(frozen=True)
class PolicyPath:
    """One path the broker uses, the capabilities it needs there, and why."""

    path: str
    capabilities: tuple[str, ...]
    why: str

    def probe_path(self) -> str:
        """A concrete path `sys/capabilities-self` can be asked about (globs filled in)."""
        return self.path.replace("*", "doctor-probe")


@dataclass(frozen=True)
class EngineTemplate:
    """What a secrets engine needs for one role ({mount} and {role} are filled in): the paths
    it issues from and the prefix its leases live under."""

    issue: tuple[tuple[str, tuple[str, ...], str], ...]
    lease_prefix: str | None
    uses_token_accessors: bool = False


DATABASE = EngineTemplate(
    issue=(("{mount}/creds/{role}", ("read",), "issue dynamic credentials"),),
    lease_prefix="{mount}/creds/{role}",
)
ENGINE_TEMPLATES: dict[str, EngineTemplate] = {
    "database": DATABASE,
    # Redis users come from the database secrets engine's Redis plugin: the same paths.
    "redis": DATABASE,
    "token": EngineTemplate(
        issue=(("{mount}/create/{role}", ("update",), "create tokens from the token role"),),
        lease_prefix=None,
        uses_token_accessors=True,
    ),
    # Certificates carry no OpenBao lease: they are revoked by serial and checked on the CRL
    # (`<mount>/cert/crl`).
    "pki": EngineTemplate(
        issue=(
            ("{mount}/issue/{role}", ("update",), "issue certificates"),
            ("{mount}/revoke", ("update",), "revoke certificates by serial number"),
            ("{mount}/cert/*", ("read",), "check a certificate's revocation and the CRL"),
        ),
        lease_prefix=None,
    ),
    # OpenBao keeps no record of signed SSH certificates: signing is all the broker does.
    "ssh": EngineTemplate(
        issue=(("{mount}/sign/{role}", ("update",), "sign SSH certificates"),),
        lease_prefix=None,
    ),
}


@dataclass
class _Collected:
    capabilities: set[str] = field(default_factory=set)
    # why → the profiles that need it
    reasons: dict[str, list[str]] = field(default_factory=dict)

    def describe(self) -> str:
        return "; ".join(
            f"{why} ({', '.join(profiles)})" if profiles else why
            for why, profiles in self.reasons.items()
        )


def role_path(profile: ProfileConfig, role: str) -> str:
    """Where OpenBao keeps the role's definition (read by `jitbroker doctor`)."""
    return f"{profile.mount}/roles/{role}"


def required_paths(config: BrokerConfig) -> list[PolicyPath]:
    """Every path the broker's token needs for `config`'s profiles, and nothing else."""
    collected: dict[str, _Collected] = {}

    def need(path: str, capabilities: tuple[str, ...], why: str, profile: str = "") -> None:
        entry = collected.setdefault(path, _Collected())
        entry.capabilities.update(capabilities)
        profiles = entry.reasons.setdefault(why, [])
        if profile and profile not in profiles:
            profiles.append(profile)

    leases, accessors = False, False
    for profile in sorted(config.profiles.values(), key=lambda p: p.id):
        template = ENGINE_TEMPLATES.get(profile.engine)
        if template is None:
            raise ValueError(
                f"profile {profile.id!r}: no OpenBao policy template for engine "
                f"{profile.engine!r} (add one to ENGINE_TEMPLATES in jitbroker/vault_policy.py)"
            )
        for role in dict.fromkeys(scope.role for scope in profile.scopes):
            for pattern, capabilities, why in template.issue:
                need(pattern.format(mount=profile.mount, role=role), capabilities, why, profile.id)
            need(role_path(profile, role), ("read",), "doctor checks the role's TTLs", profile.id)
            if template.lease_prefix is not None:
                prefix = template.lease_prefix.format(mount=profile.mount, role=role)
                leases = True
                need(
                    f"sys/leases/renew/{prefix}/*",
                    ("update",),
                    "set the lease TTL to the grant TTL",
                    profile.id,
                )
                need(f"sys/leases/revoke/{prefix}/*", ("update",), "revoke leases", profile.id)
                need(
                    f"sys/leases/lookup/{prefix}/",
                    ("list", "sudo"),
                    "the reconciler lists the role's leases",
                    profile.id,
                )
            accessors |= template.uses_token_accessors
    if leases:
        # The lookup takes the lease id in the body, so it cannot be narrowed to a mount; it
        # reveals lease metadata (issue and expiry times), never a secret.
        need("sys/leases/lookup", ("update",), "check a lease is gone after revoking it")
    if accessors:
        need("auth/token/lookup-accessor", ("update",), "check an issued token is gone")
        need("auth/token/revoke-accessor", ("update",), "revoke issued tokens")
    need("auth/token/lookup-self", ("read",), "readiness: the broker's token is valid")
    need("auth/token/renew-self", ("update",), "the broker renews its own token")
    need("sys/capabilities-self", ("update",), "jitbroker doctor checks this policy")
    return [
        PolicyPath(
            path,
            tuple(c for c in CAPABILITY_ORDER if c in entry.capabilities),
            entry.describe(),
        )
        for path, entry in collected.items()
    ]


def render_policy(config: BrokerConfig) -> str:
    """The policy as HCL, one commented block per path."""
    blocks = [HEADER]
    for rule in required_paths(config):
        capabilities = ", ".join(f'"{c}"' for c in rule.capabilities)
        blocks.append(
            f'# {rule.why}\npath "{rule.path}" {{\n  capabilities = [{capabilities}]\n}}\n'
        )
    return "\n".join(blocks)
