"""Fixtures of the Socket.IO tests: the real hub binary with a config file, on an
ephemeral port, reusing the Python client's test helpers (clients/python/tests)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python" / "tests"))

from support import HubProcess


@pytest.fixture
def hub_with(tmp_path: Path) -> Iterator[Callable[[str], HubProcess]]:
    """Starts hubs with a TOML config of the test's; each is stopped after the test."""
    started: list[HubProcess] = []

    def start(config: str) -> HubProcess:
        path = tmp_path / f"statecast-{len(started)}.toml"
        path.write_text(config)
        hub = HubProcess(tmp_path / f"data-{len(started)}", ["--config", str(path)])
        hub.start()
        started.append(hub)
        return hub

    yield start
    for hub in started:
        hub.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Totals in the form .ci/run adds up (as Node's test runner prints)."""
    stats = terminalreporter.stats
    terminalreporter.write_line(f"# pass {len(stats.get('passed', []))}")
    terminalreporter.write_line(f"# fail {len(stats.get('failed', [])) + len(stats.get('error', []))}")
