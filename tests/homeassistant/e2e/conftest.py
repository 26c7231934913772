"""Fixtures: a device server and a hub of the test's own (fixtures.py), and a real Home
Assistant (hass_process.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fixtures import device, hub, hub_config, pytest_terminal_summary  # noqa: F401 (fixtures, hook)

from hass_process import VENV, HomeAssistant


@pytest.fixture
async def ha(tmp_path: Path) -> AsyncIterator[HomeAssistant]:
    """Home Assistant with the integration copied in, on a free port; stopped by its PID."""
    venv = Path(os.environ.get("STATECAST_HA_E2E_VENV") or VENV)
    process = HomeAssistant(tmp_path / "ha", venv)
    await process.start()
    yield process
    await process.stop()
