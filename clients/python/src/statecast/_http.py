"""REST over the standard library: URLs, one blocking request, and the typed results.

The async client runs these in a worker thread (``asyncio.to_thread``); the synchronous API
calls them directly. ``urllib`` is enough for a handful of JSON requests, so the package
needs no HTTP library.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Final

from ._errors import UnreachableError, error_from
from ._json import JSON


@dataclass(frozen=True, slots=True)
class Urls:
    """Where the hub is: its WebSocket URL and the base of its REST API."""

    ws: str
    http: str


def derive_urls(url: str) -> Urls:
    """Both URLs of a hub from either one.

    ``ws://host:8080/ws`` (or ``ws://host:8080``) means the REST base ``http://host:8080``;
    ``http://host:8080/prefix`` means the WebSocket ``ws://host:8080/prefix/ws``.
    """
    parts = urllib.parse.urlsplit(str(url))
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss", "http", "https") or not parts.netloc:
        raise ValueError(f"statecast: expected a ws://, wss://, http:// or https:// URL, got {url!r}")
    secure = scheme in ("wss", "https")
    path = parts.path.rstrip("/")
    if scheme in ("ws", "wss"):
        ws_path = path or "/ws"
        if path.endswith("/ws"):
            path = path[: -len("/ws")]
        query = f"?{parts.query}" if parts.query else ""
    else:
        ws_path = path + "/ws"
        query = ""
    return Urls(
        ws=f"{'wss' if secure else 'ws'}://{parts.netloc}{ws_path}{query}",
        http=f"{'https' if secure else 'http'}://{parts.netloc}{path}",
    )


def topic_path(topic: str) -> str:
    """A topic as URL path segments (each percent-encoded, the slashes kept)."""
    return "/".join(urllib.parse.quote(segment, safe="") for segment in str(topic).split("/"))


_NO_BODY: Final = object()


@dataclass(frozen=True, slots=True)
class Response:
    """A hub's HTTP answer: its status, headers and parsed JSON body (``None`` if empty)."""

    status: int
    headers: Message
    body: JSON


def request(
    method: str,
    url: str,
    *,
    body: JSON | object = _NO_BODY,
    headers: Mapping[str, str] | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> Response:
    """One blocking HTTP request with a JSON body; returns the answer whatever its status.

    Raises :class:`UnreachableError` when no HTTP answer arrives.
    """
    all_headers = {"Accept": "application/json", **(headers or {})}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    data: bytes | None = None
    if body is not _NO_BODY:
        data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        all_headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        try:
            with urllib.request.urlopen(req, timeout=timeout) as res:
                status, res_headers, raw = res.status, res.headers, res.read()
        except urllib.error.HTTPError as err:  # any status but 2xx, 304 included
            status, res_headers, raw = err.code, err.headers, err.read()
            err.close()
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise UnreachableError(f"{method} {url} failed: {reason}") from err
    parsed: JSON = None
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
    return Response(status, res_headers, parsed)


def checked(response: Response) -> JSON:
    """The body of a 2xx answer; the typed exception of any other."""
    if 200 <= response.status < 300:
        return response.body
    error = response.body.get("error") if isinstance(response.body, dict) else None
    if not isinstance(error, dict):
        error = {"code": f"http_{response.status}", "message": f"the hub answered HTTP {response.status}"}
    raise error_from(error, http_status=response.status)
