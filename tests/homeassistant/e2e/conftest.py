"""Fixtures: a device server and a hub of the test's own (fixtures.py)."""

from __future__ import annotations

from fixtures import device, hub, hub_config  # noqa: F401 (fixtures)


def pytest_terminal_summary(terminalreporter) -> None:
    """Totals in the form the repository's .ci/run adds up."""
    stats = terminalreporter.stats
    terminalreporter.write_line(f"# pass {len(stats.get('passed', []))}")
    terminalreporter.write_line(f"# fail {len(stats.get('failed', [])) + len(stats.get('error', []))}")
