"""Hot reload: a valid change is swapped in, an invalid one is refused and the old one kept."""

from __future__ import annotations

from pathlib import Path

from jitbroker.bootstrap import Broker
from jitbroker.config_reload import ConfigWatcher

NEW_RULE = """
rules:
  - name: aa-freeze
    when: request.profile == "demo-token"
    effect: deny
    reason: change freeze
"""


def test_unchanged_directory_is_not_reloaded(broker: Broker) -> None:
    watcher = ConfigWatcher(broker)

    assert watcher.check() is False


def test_valid_change_is_swapped_in(broker: Broker, demo_config_dir: Path) -> None:
    watcher = ConfigWatcher(broker)
    old_policy = broker.policy
    (demo_config_dir / "aa-freeze.yaml").write_text(NEW_RULE)

    assert watcher.check() is True

    assert broker.policy is not old_policy
    assert broker.config.rules[0].name == "aa-freeze"
    assert "config.reloaded" in [event.type for event in broker.audit.read_all()]


def test_invalid_change_is_refused_and_the_running_config_kept(
    broker: Broker, demo_config_dir: Path
) -> None:
    watcher = ConfigWatcher(broker)
    running = broker.config
    (demo_config_dir / "broken.yaml").write_text("rules:\n  - name: x\n    when: 'request.('\n")

    assert watcher.check() is False

    assert broker.config is running
    rejected = [e for e in broker.audit.read_all() if e.type == "config.reload_rejected"]
    assert rejected
    assert "broken.yaml" in (rejected[0].reason or "")
