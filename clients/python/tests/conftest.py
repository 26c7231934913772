from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import HubProcess


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcess]:
    """A hub of its own for the test, on an ephemeral port with a fresh data dir."""
    process = HubProcess(tmp_path / "data")
    process.start()
    yield process
    process.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Totals in the form the repository's .ci/run adds up (as Node's test runner prints)."""
    stats = terminalreporter.stats
    terminalreporter.write_line(f"# pass {len(stats.get('passed', []))}")
    terminalreporter.write_line(f"# fail {len(stats.get('failed', [])) + len(stats.get('error', []))}")
