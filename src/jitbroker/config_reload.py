"""Hot reload of the configuration directory: validate the new files first, then swap or keep."""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

from jitbroker.audit.events import AuditEvent
from jitbroker.bootstrap import Broker
from jitbroker.config import load_config
from jitbroker.errors import ConfigError
from jitbroker.identity.verifier import TokenVerifier
from jitbroker.policy.engine import PolicyEngine

log = logging.getLogger(__name__)


def config_fingerprint(directory: Path) -> str:
    """A digest of every YAML file's name and content (robust to ConfigMap symlink swaps)."""
    digest = hashlib.sha256()
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        digest.update(path.name.encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"<unreadable>")
    return digest.hexdigest()


def reload_config(broker: Broker) -> bool:
    """Load the directory again; swap it in only if it is valid, otherwise keep serving the old."""
    try:
        config = load_config(broker.settings.config_dir)
        verifier = TokenVerifier(config)
        policy = PolicyEngine(config.rules)
    except ConfigError as exc:
        log.error("configuration change rejected, keeping the running one: %s", exc)
        broker.audit.record(
            AuditEvent(type="config.reload_rejected", outcome="rejected", reason=str(exc))
        )
        return False
    broker.config, broker.verifier, broker.policy = config, verifier, policy
    broker.audit.record(
        AuditEvent(
            type="config.reloaded",
            outcome="applied",
            details={
                "issuers": len(config.issuers),
                "workloads": len(config.workloads),
                "profiles": len(config.profiles),
                "rules": len(config.rules),
            },
        )
    )
    log.info("configuration reloaded from %s", broker.settings.config_dir)
    return True


class ConfigWatcher:
    """Reloads when the directory's content changes; call `check()` periodically."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._seen = config_fingerprint(broker.settings.config_dir)

    def check(self) -> bool:
        """True when a changed directory was reloaded and swapped in."""
        current = config_fingerprint(self._broker.settings.config_dir)
        if current == self._seen:
            return False
        self._seen = current
        return reload_config(self._broker)


def watch_config(broker: Broker, stop: threading.Event) -> None:
    """Check for changes every `config_reload_seconds` until `stop` is set."""
    interval = broker.settings.config_reload_seconds
    if interval <= 0:
        return
    watcher = ConfigWatcher(broker)
    while not stop.wait(interval):
        try:
            watcher.check()
        except Exception:  # noqa: BLE001 - the watcher must outlive any one bad check
            log.exception("configuration check failed")
