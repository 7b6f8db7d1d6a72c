"""What the sync and async clients share: the requests of each API call, the retry rule and the
decoding of answers. The clients only move these requests over httpx, so both speak the API the
same way (docs/protocol.md §5, §14)."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Union
from urllib.parse import quote

import httpx

from .errors import TetherError, error_from_response

#: A duration for ``block_for``: a tether duration string (``"10m"``), seconds, or a timedelta.
Duration = Union[str, int, float, timedelta]

_RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried.

    A call is sent at most ``attempts`` times. It is retried after a connection error or timeout
    and after a 502, 503 or 504 answer (and a 409 ``in_progress``, which means the first try with
    the same idempotency key is still being answered). Before retry *n* (from 0) it waits
    ``min(max_backoff, backoff * 2**n)``, less up to ``jitter`` of it at random.

    Calls that are safe to repeat are retried so: reads, deletes, subscribe/unsubscribe, and push
    and publish, which carry an idempotency key (made per call unless given) that every retry
    reuses, so tether delivers the message once. A broadcast has no key, so it is retried only
    when the connection could not be made (nothing was sent).
    """

    attempts: int = 3
    backoff: float = 0.1
    max_backoff: float = 2.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("RetryPolicy: backoff and max_backoff >= 0, jitter in [0, 1]")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 = the first retry)."""
        base = min(self.max_backoff, self.backoff * 2.0**retry)
        return base * (1 - self.jitter * random.random())


NO_RETRY = RetryPolicy(attempts=1)


@dataclass
class Request:
    """One API call: everything needed to send it, and to send it again."""

    method: str
    path: str
    body: Optional[Dict[str, Any]] = None
    params: Dict[str, str] = field(default_factory=dict)
    #: Safe to send again after a failure that may have reached the server.
    repeatable: bool = True
    #: Non-2xx statuses that are an answer, not an error (`/health`'s 503 `draining`).
    answers: FrozenSet[int] = frozenset()

    def content(self) -> Optional[bytes]:
        """The body, serialized once so every attempt sends the same bytes."""
        if self.body is None:
            return None
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False).encode()


def new_idempotency_key() -> str:
    """A fresh idempotency key (random, 32 hex digits)."""
    return uuid.uuid4().hex


def retry_after(req: Request, exc: Optional[BaseException], status: Optional[int], code: Optional[str]) -> bool:
    """Whether a failed attempt may be retried."""
    if exc is not None:
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return True  # nothing reached the server
        return req.repeatable and isinstance(exc, httpx.TransportError)
    if not req.repeatable or status in req.answers:
        return False
    return status in _RETRY_STATUSES or (status == 409 and code == "in_progress")


def decode(resp: httpx.Response, answers: FrozenSet[int] = frozenset()) -> Any:
    """The JSON of a 2xx answer (or of a status in `answers`), or the typed exception of an error answer."""
    if 200 <= resp.status_code < 300 or resp.status_code in answers:
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as e:
            raise TetherError(resp.status_code, "invalid_answer", f"the answer is not JSON: {e}") from e
    raise error_from_response(resp.status_code, resp.content)


def error_code(resp: httpx.Response) -> Optional[str]:
    """The error code of an answer, if it has one."""
    try:
        code = resp.json()["error"]["code"]
        return code if isinstance(code, str) else None
    except (ValueError, TypeError, KeyError):
        return None


def duration(value: Duration) -> str:
    """A tether duration string from seconds, a timedelta or a string (passed through)."""
    if isinstance(value, str):
        return value
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def seg(value: str) -> str:
    """A path segment, percent-encoded (client ids and channels may hold any printable text)."""
    return quote(value, safe="")


def _params(**kw: Any) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for k, v in kw.items():
        if v is None:
            continue
        out[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


def _message(type: str, data: Any) -> Dict[str, Any]:
    body: Dict[str, Any] = {"type": type}
    if data is not None:
        body["data"] = data
    return body


# ------------------------------------------------------------------------ the calls


def push(client_id: str, type: str, data: Any, key: Optional[str]) -> Request:
    body = {"client_id": client_id, **_message(type, data), "idempotency_key": key or new_idempotency_key()}
    return Request("POST", "/api/v1/push", body)


def push_session(session_id: str, type: str, data: Any, key: Optional[str]) -> Request:
    body = {"session_id": session_id, **_message(type, data), "idempotency_key": key or new_idempotency_key()}
    return Request("POST", "/api/v1/push", body)


def publish(channel: str, type: str, data: Any, key: Optional[str]) -> Request:
    body = {"channel": channel, **_message(type, data), "idempotency_key": key or new_idempotency_key()}
    return Request("POST", "/api/v1/publish", body)


def broadcast(type: str, data: Any) -> Request:
    return Request("POST", "/api/v1/broadcast", _message(type, data), repeatable=False)


def batch(commands: Sequence[Mapping[str, Any]]) -> Request:
    """Each push and publish command without a key gets one, so the whole batch can be retried."""
    out: List[Dict[str, Any]] = []
    repeatable = True
    for cmd in commands:
        if len(cmd) != 1:
            raise ValueError("each batch command is a dict with one key: push, publish, subscribe, ...")
        ((name, args),) = cmd.items()
        args = dict(args)
        if name in ("push", "publish"):
            args.setdefault("idempotency_key", new_idempotency_key())
        elif name == "broadcast":
            repeatable = False
        out.append({name: args})
    return Request("POST", "/api/v1/batch", {"commands": out}, repeatable=repeatable)


def subscribe(client_id: str, channel: str, since: Optional[str]) -> Request:
    body: Dict[str, Any] = {"client_id": client_id, "channel": channel}
    if since is not None:
        body["since"] = since
    return Request("POST", "/api/v1/subscribe", body)


def unsubscribe(client_id: str, channel: str) -> Request:
    return Request("POST", "/api/v1/unsubscribe", {"client_id": client_id, "channel": channel})


def presence(client_id: str) -> Request:
    return Request("GET", f"/api/v1/presence/{seg(client_id)}")


def channel_presence(channel: str) -> Request:
    return Request("GET", f"/api/v1/channels/{seg(channel)}/presence")


def channels(prefix: Optional[str], limit: Optional[int], after: Optional[str]) -> Request:
    return Request("GET", "/api/v1/channels", params=_params(prefix=prefix, limit=limit, after=after))


def history(client_id: str, since: Optional[str], limit: Optional[int], reverse: Optional[bool]) -> Request:
    return Request("GET", f"/api/v1/history/{seg(client_id)}", params=_params(since=since, limit=limit, reverse=reverse))


def channel_history(channel: str, since: Optional[str], limit: Optional[int], reverse: Optional[bool]) -> Request:
    return Request(
        "GET", f"/api/v1/channels/{seg(channel)}/history", params=_params(since=since, limit=limit, reverse=reverse)
    )


def sessions(client_id: Optional[str], limit: Optional[int], after: Optional[str]) -> Request:
    return Request("GET", "/api/v1/sessions", params=_params(client_id=client_id, limit=limit, after=after))


def disconnect_session(session_id: str) -> Request:
    return Request("DELETE", f"/api/v1/sessions/{seg(session_id)}")


def kick(client_id: str, block_for: Optional[Duration]) -> Request:
    params = _params(block_for=None if block_for is None else duration(block_for))
    return Request("DELETE", f"/api/v1/clients/{seg(client_id)}", params=params)


def blocks() -> Request:
    return Request("GET", "/api/v1/blocks")


def unblock(client_id: str) -> Request:
    return Request("DELETE", f"/api/v1/blocks/{seg(client_id)}")


def health() -> Request:
    return Request("GET", "/health", answers=frozenset({503}))


def headers(api_key: Optional[str], extra: Optional[Mapping[str, str]]) -> Dict[str, str]:
    h = {"accept": "application/json", "user-agent": "tether-push-python/0.1"}
    if api_key is not None:
        if api_key == "":
            raise ValueError("api_key must not be empty (leave it None for a server without one)")
        h["authorization"] = f"Bearer {api_key}"
    h.update(extra or {})
    return h
