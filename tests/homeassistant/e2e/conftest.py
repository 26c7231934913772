"""Fixtures: a device server and a hub of the test's own (fixtures.py)."""

from __future__ import annotations

from fixtures import device, hub, hub_config, pytest_terminal_summary  # noqa: F401 (fixtures, hook)
