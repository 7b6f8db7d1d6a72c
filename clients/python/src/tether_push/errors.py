"""Typed exceptions: one class per error code of tether's HTTP API (docs/protocol.md §5, §13, §14).

tether answers every error with ``{"error": {"code", "message"}}``. :func:`error_from_response` turns
that into the subclass of :class:`TetherError` registered for the code, or, for a code this SDK does
not know yet, into the class of its HTTP status (``BadRequest`` for 400, ``NotFound`` for 404, ...),
so ``except tether_push.NotFound`` keeps working when the server grows a new 404 code.
"""

from __future__ import annotations

import json
from typing import Dict, Optional, Type


class TetherError(Exception):
    """An error answer of tether, or a request that could not be completed.

    ``status`` is the HTTP status (None when no answer arrived), ``code`` the snake_case error code,
    ``message`` the server's human sentence.
    """

    def __init__(self, status: Optional[int], code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class TransportError(TetherError):
    """No answer: the connection failed or timed out on every attempt. ``__cause__`` is httpx's error."""

    def __init__(self, message: str) -> None:
        super().__init__(None, "transport_error", message)


class BadRequest(TetherError):
    """400: the request was malformed."""


class InvalidJson(BadRequest):
    """400 ``invalid_json``: the body is not JSON."""


class InvalidBody(BadRequest):
    """400 ``invalid_body``: a field is missing, unknown or of the wrong type (the message names it)."""


class BadClientId(BadRequest):
    """400 ``bad_client_id``: 1 to 256 bytes, no control characters."""


class BadChannel(BadRequest):
    """400 ``bad_channel``: not a valid channel name."""


class Unauthorized(TetherError):
    """401 ``unauthorized``: missing or wrong api_key (or no api_key and not a local caller)."""


class Forbidden(TetherError):
    """403: refused for this caller."""


class Blocked(Forbidden):
    """403 ``blocked``: the client id is blocked (§14)."""


class NotFound(TetherError):
    """404: nothing there (``not_found``, and the base of the more precise 404s)."""


class NoSession(NotFound):
    """404 ``no_session``: that client id has no live session (and history is off)."""


class UnknownSession(NotFound):
    """404 ``unknown_session``: no session with that id."""


class HistoryOff(NotFound):
    """404 ``history_off``: the server keeps no history (``history_size = 0``)."""


class MethodNotAllowed(TetherError):
    """405 ``method_not_allowed``."""


class BodyTimeout(TetherError):
    """408 ``body_timeout``: the body did not arrive within ``http_body_timeout``."""


class InProgress(TetherError):
    """409 ``in_progress``: the first call with this idempotency key is still being answered."""


class BodyTooLarge(TetherError):
    """413 ``body_too_large``."""


class IdempotencyKeyReused(TetherError):
    """422 ``idempotency_key_reused``: the key was used within the window for another message."""


class RateLimited(TetherError):
    """429: too many connections or requests from this address (``too_many_connections``)."""


class ServerError(TetherError):
    """5xx: the server could not answer."""


class EngineUnavailable(ServerError):
    """503 ``engine_unavailable``: the history / cluster engine (Redis) is unreachable."""


class Draining(ServerError):
    """503 ``draining``: the node is shutting down; another node will answer."""


class ServerFull(ServerError):
    """503 ``server_full``."""


class EngineTimeout(ServerError):
    """504 ``engine_timeout``: the message may or may not have been delivered; a retry with the
    same idempotency key (which this SDK makes) delivers it at most once."""


_BY_CODE: Dict[str, Type[TetherError]] = {
    "invalid_json": InvalidJson,
    "invalid_body": InvalidBody,
    "bad_client_id": BadClientId,
    "bad_channel": BadChannel,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "blocked": Blocked,
    "not_found": NotFound,
    "no_session": NoSession,
    "unknown_session": UnknownSession,
    "history_off": HistoryOff,
    "method_not_allowed": MethodNotAllowed,
    "body_timeout": BodyTimeout,
    "in_progress": InProgress,
    "body_too_large": BodyTooLarge,
    "idempotency_key_reused": IdempotencyKeyReused,
    "too_many_connections": RateLimited,
    "rate_limited": RateLimited,
    "engine_unavailable": EngineUnavailable,
    "draining": Draining,
    "server_full": ServerFull,
    "engine_timeout": EngineTimeout,
}

_BY_STATUS: Dict[int, Type[TetherError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    408: BodyTimeout,
    409: InProgress,
    413: BodyTooLarge,
    422: IdempotencyKeyReused,
    429: RateLimited,
}


def error_from_response(status: int, body: bytes) -> TetherError:
    """The exception for an error answer: by code, else by status, else :class:`TetherError`."""
    code = f"http_{status}"
    message = body.decode("utf-8", "replace")[:500]
    try:
        err = json.loads(body)["error"]
        if isinstance(err.get("code"), str):
            code = err["code"]
        if isinstance(err.get("message"), str):
            message = err["message"]
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else TetherError
    return cls(status, code, message)
