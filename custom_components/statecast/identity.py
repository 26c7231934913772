"""Which hub a URL leads to, checked by connecting: the config flow's validation and the
config entry's unique id.

The hub's identity is its store's epoch (a random id its store writes once, kept across
restarts, shared by the hubs of one cluster), the part before the `:` of the cursor its
SSE stream puts on a batch (`id: <epoch>:<seq>`, docs/protocol.md). The stream of
`_entities/#` sends one as soon as the hub holds an entity description; a hub holding
none answers only keep-alives, and then the identity is the URL's host and port.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import aiohttp

from .hub import AuthError, HubError, normalize_url

IDENTITY_WAIT = 2.0  # seconds to wait for the first SSE cursor


async def async_check_hub(session: aiohttp.ClientSession, url: str, token: str | None) -> str:
    """The hub's identity; HubError when it is no hub or unreachable, AuthError when it
    refuses the token."""
    base = normalize_url(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with session.get(base + "/api/health", headers=headers, timeout=timeout) as res:
            health = await res.json(content_type=None) if res.status == 200 else None
        if not isinstance(health, dict) or "status" not in health:
            raise HubError(f"{base} is not a statecast hub")
        async with session.get(base + "/api/state?match=_entities/%23", headers=headers, timeout=timeout) as res:
            if res.status in (401, 403):
                raise AuthError(f"the hub answered {res.status}", "unauthorized")
            if res.status != 200:
                raise HubError(f"{base} answered {res.status} to a read of _entities/#")
        epoch = await _epoch(session, base, headers)
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as err:
        raise HubError(f"cannot reach a statecast hub at {base}: {err or type(err).__name__}") from err
    if epoch:
        return f"epoch:{epoch}"
    parts = urlsplit(base)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"url:{(parts.hostname or '').lower()}:{port}"


async def _epoch(session: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> str | None:
    async def read() -> str | None:
        async with session.get(
            base + "/api/stream?match=_entities/%23", headers=headers, timeout=aiohttp.ClientTimeout(total=None)
        ) as res:
            if res.status != 200:
                return None
            async for raw in res.content:
                line = raw.decode("utf-8", "replace").strip()
                if line.startswith("id:"):
                    cursor = line[3:].strip()
                    return cursor.rsplit(":", 1)[0] or None
        return None

    with contextlib.suppress(asyncio.TimeoutError):
        return await asyncio.wait_for(read(), IDENTITY_WAIT)
    return None
