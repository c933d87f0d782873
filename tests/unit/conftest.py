"""Shared fixtures: write a configuration directory into tmp_path and load it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from jitbroker.config import BrokerConfig, load_config

ConfigFiles = dict[str, Any]


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[ConfigFiles], Path]:
    """Write `{file name: YAML document, or raw text}` into a fresh directory; return it."""
    directory = tmp_path / "config"
    directory.mkdir()

    def write(files: ConfigFiles) -> Path:
        for name, content in files.items():
            text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
            (directory / name).write_text(text, encoding="utf-8")
        return directory

    return write


@pytest.fixture
def make_config(
    write_config: Callable[[ConfigFiles], Path],
) -> Callable[[ConfigFiles], BrokerConfig]:
    """Write a configuration directory and return `load_config` of it."""

    def make(files: ConfigFiles) -> BrokerConfig:
        return load_config(write_config(files))

    return make
