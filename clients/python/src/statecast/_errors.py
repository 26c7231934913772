"""Typed exceptions: one class per error code of the hub, plus the client's own failures."""

from __future__ import annotations

from ._json import JSON


class StatecastError(Exception):
    """Base class of everything this package raises.

    ``code`` is the hub's error code (``"invalid_topic"``, ``"no_route"``, ...) or one of the
    client's own: ``"disconnected"``, ``"unreachable"``, ``"closed"``.
    """

    #: The code of this class; instances carry the code they were made with.
    default_code = "internal"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        body: JSON = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: str = code or self.default_code
        #: For ``upstream``: the HTTP status the device answered with (``None`` if it
        #: could not be reached).
        self.status = status
        #: For ``upstream``: the device's answer (its JSON, or its text).
        self.body: JSON = body
        #: The HTTP status of the hub's answer when the request went over REST.
        self.http_status = http_status

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class HubError(StatecastError):
    """The hub refused a request; ``code`` says why."""


class BadRequestError(HubError):
    """``bad_request``: malformed input, e.g. a ``null`` state or a missing argument."""

    default_code = "bad_request"


class UnknownTypeError(HubError):
    """``unknown_type``: the hub does not know the message type."""

    default_code = "unknown_type"


class InvalidTopicError(HubError):
    """``invalid_topic``: the topic breaks the naming rules."""

    default_code = "invalid_topic"


class InvalidPatternError(HubError):
    """``invalid_pattern``: the subscription pattern breaks the naming rules."""

    default_code = "invalid_pattern"


class NotFoundError(HubError):
    """``not_found``: the topic does not exist."""

    default_code = "not_found"


class GoneError(HubError):
    """``gone``: the time asked for is older than the history the hub keeps."""

    default_code = "gone"


class TooLargeError(HubError):
    """``too_large``: the state, event or message is larger than the hub accepts."""

    default_code = "too_large"


class UnauthorizedError(HubError):
    """``unauthorized``: no valid token."""

    default_code = "unauthorized"


class ForbiddenError(HubError):
    """``forbidden``: the token may not do this."""

    default_code = "forbidden"


class RateLimitedError(HubError):
    """``rate_limited``: too many requests (or commands in flight)."""

    default_code = "rate_limited"


class ConflictError(HubError):
    """``conflict``: an ``if_rev`` condition did not hold."""

    default_code = "conflict"


class NoRouteError(HubError):
    """``no_route``: no command route matches the target."""

    default_code = "no_route"


class HubTimeoutError(HubError):
    """``timeout``: the device did not answer the command in time."""

    default_code = "timeout"


class UpstreamError(HubError):
    """``upstream``: the device refused the command or could not be reached.

    ``status`` and ``body`` hold the device's answer when there was one.
    """

    default_code = "upstream"


class UnavailableError(HubError):
    """``unavailable``: the hub's store cannot take the write now."""

    default_code = "unavailable"


class InternalError(HubError):
    """``internal``: the hub failed."""

    default_code = "internal"


class DisconnectedError(StatecastError):
    """The WebSocket dropped before the result arrived: the write may or may not have been
    applied."""

    default_code = "disconnected"


class UnreachableError(StatecastError):
    """A REST request to the hub failed: connection refused, timed out, not HTTP."""

    default_code = "unreachable"


class ClosedError(StatecastError):
    """The client was closed."""

    default_code = "closed"


_BY_CODE: dict[str, type[HubError]] = {
    cls.default_code: cls
    for cls in (
        BadRequestError,
        UnknownTypeError,
        InvalidTopicError,
        InvalidPatternError,
        NotFoundError,
        GoneError,
        TooLargeError,
        UnauthorizedError,
        ForbiddenError,
        RateLimitedError,
        ConflictError,
        NoRouteError,
        HubTimeoutError,
        UpstreamError,
        UnavailableError,
        InternalError,
    )
}


def error_from(error: JSON, *, http_status: int | None = None) -> HubError:
    """The exception for the hub's ``{"code", "message", ...}`` error object.

    An unknown code gives a plain :class:`HubError` carrying it.
    """
    if not isinstance(error, dict):
        error = {}
    code = error.get("code")
    code = code if isinstance(code, str) and code else "internal"
    message = error.get("message")
    message = message if isinstance(message, str) else code
    status = error.get("status")
    cls = _BY_CODE.get(code, HubError)
    return cls(
        message,
        code=code,
        status=status if isinstance(status, int) else None,
        body=error.get("body"),
        http_status=http_status,
    )
