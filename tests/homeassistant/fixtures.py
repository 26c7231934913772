"""The fixtures both suites use (imported by integration/conftest.py and e2e/conftest.py):
a device server and a hub of the test's own whose `http` route calls it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support import Device, Hub

# fade/# turns stale after 1 s without a write
STALE_CONFIG = '[[topics]]\nmatch = "fade/#"\nstale_after = "1s"\n'
# commands to dead/# go to a port where nothing listens (before the device's route for #)
DEAD_ROUTE = '[[route]]\ntarget = "dead/#"\ntype = "http"\nurl = "http://127.0.0.1:9/{name}"\n'


@pytest.fixture
async def device() -> AsyncIterator[Device]:
    dev = Device()
    await dev.start()
    yield dev
    await dev.close()


@pytest.fixture
def hub_config() -> str:
    """More of the hub's config file (a test parametrizes it)."""
    return ""


@pytest.fixture
async def hub(tmp_path: Path, device: Device, hub_config: str) -> AsyncIterator[Hub]:
    """A hub of its own: the device's command route (and a dead one for `dead/#`), a stale
    policy for `fade/#`."""
    process = Hub(tmp_path, DEAD_ROUTE + device.route() + STALE_CONFIG + hub_config)
    await process.start()
    yield process
    await process.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Totals in the form the repository's .ci/run adds up (as Node's test runner prints);
    each conftest.py imports this hook."""
    stats = terminalreporter.stats
    terminalreporter.write_line(f"# pass {len(stats.get('passed', []))}")
    terminalreporter.write_line(f"# fail {len(stats.get('failed', [])) + len(stats.get('error', []))}")
