# One real stack per session (started only when a test asks for it), for integration and e2e alike.
from pathlib import Path

import pytest

pytest_plugins = ["tests.real_stack"]

RESILIENCE = Path(__file__).resolve().parent / "resilience"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/resilience points the stack at a Redis it restarts, so it runs only when named
    (`make test-resilience`), in a session of its own."""
    if collection_path != RESILIENCE:
        return None
    named = [Path(arg.split("::")[0]).resolve() for arg in config.args]
    return not any(path == RESILIENCE or RESILIENCE in path.parents for path in named)
