"""The benchmarks run on the same real stack as the integration tests.

Every bench test adds its section and table rows to one report, written at the end of the session
to bench/report.json and bench/report.md (and bench/latency.png when matplotlib is installed)."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from tests.integration.support import free_port, wait_for
from tests.real_stack import process_env

from jitbroker.bootstrap import Broker, build_broker
from jitbroker.config import Settings

pytest_plugins = ["tests.real_stack"]

REPORT_DIR = Path(__file__).parent


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile of `samples` (q in 0..100)."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.4999)))
    return ordered[rank - 1]


class Report:
    """Sections for report.json, rows for report.md's table, latency series for the plot."""

    def __init__(self) -> None:
        self.sections: dict[str, Any] = {}
        self.rows: list[tuple[str, str, str, bool | None]] = []
        self.series: dict[str, list[float]] = {}

    def row(self, measure: str, value: str, target: str = "", passed: bool | None = None) -> None:
        self.rows.append((measure, value, target, passed))

    def write(self) -> None:
        document = {
            "measured_at": datetime.now(UTC).isoformat(),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            **self.sections,
            "targets": [
                {"measure": m, "value": v, "target": t, "pass": p}
                for m, v, t, p in self.rows
                if p is not None
            ],
        }
        (REPORT_DIR / "report.json").write_text(json.dumps(document, indent=2) + "\n")
        machine = document["machine"]
        lines = [
            "# jitbroker benchmark report\n",
            f"Measured {document['measured_at']} on {machine['platform']} "
            f"({machine['cpus']} CPUs, Python {machine['python']}). Broker and raw OpenBao are "
            "measured side by side in the same run; load comes from a separate client process.\n",
            "| measure | value | target | result |",
            "|---|---|---|---|",
        ]
        for measure, value, target, passed in self.rows:
            verdict = "" if passed is None else ("pass" if passed else "**FAIL**")
            lines.append(f"| {measure} | {value} | {target} | {verdict} |")
        if self._plot():
            lines.append("\n![issuance latency](latency.png)")
        else:
            lines.append("\n(no plot: matplotlib is not installed)")
        (REPORT_DIR / "report.md").write_text("\n".join(lines) + "\n")

    def _plot(self) -> bool:
        if not self.series:
            return False
        try:
            import matplotlib  # noqa: PLC0415 - optional

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt  # noqa: PLC0415
        except ImportError:
            return False
        figure, axis = plt.subplots(figsize=(9, 5))
        names = list(self.series)
        axis.boxplot(
            [[s * 1000 for s in self.series[n]] for n in names], whis=(1, 99), showfliers=False
        )
        axis.set_xticks(range(1, len(names) + 1), names, rotation=60, ha="right", fontsize=7)
        axis.set_ylabel("latency (ms), whiskers p1–p99")
        axis.set_title("Issuance latency: broker vs raw OpenBao")
        figure.tight_layout()
        figure.savefig(REPORT_DIR / "latency.png", dpi=110)
        plt.close(figure)
        return True


@pytest.fixture(scope="session")
def report() -> Iterator[Report]:
    collected = Report()
    yield collected
    collected.write()


@pytest.fixture(scope="session")
def load_process() -> Iterator[ProcessPoolExecutor]:
    """One client process for the load (spawned: the test process runs threads)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@pytest.fixture
def broker(settings: Settings, state_redis: redis.Redis, worker: None, scheduler: None) -> Broker:
    """The integration broker with the per-workload rate limit raised out of the load's way
    (still counted per request, so its Redis round trip stays in the measurement) and audit
    checkpoints at the production interval (the tests sign one every 5 records)."""
    del state_redis, worker, scheduler  # started (and state flushed) before the broker
    production = Settings.model_fields["audit_checkpoint_every"].default
    return build_broker(
        settings.model_copy(
            update={"rate_limit_per_minute": 10**9, "audit_checkpoint_every": production}
        )
    )


API_PROCESSES = 2


@pytest.fixture
def served_url(broker: Broker, logs_dir: Path) -> Iterator[str]:
    """`jitbroker serve --workers 2`, as a deployment runs it, on the bench broker's settings."""
    settings = broker.settings
    port = free_port()
    env = process_env(settings) | {
        "JITBROKER_LISTEN_PORT": str(port),
        "JITBROKER_RATE_LIMIT_PER_MINUTE": str(settings.rate_limit_per_minute),
        "JITBROKER_AUDIT_CHECKPOINT_EVERY": str(settings.audit_checkpoint_every),
    }
    log = (logs_dir / "bench-serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "jitbroker", "serve", "--workers", str(API_PROCESSES)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200,
            timeout=60,
            what="jitbroker serve --workers",
        )
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
