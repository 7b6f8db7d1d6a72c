"""The synchronous client, :class:`Client`."""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union, cast

import httpx

from . import _core as core
from ._core import Duration, Request, RetryPolicy
from .errors import TransportError
from .types import (
    BatchResult,
    Block,
    ChannelInfo,
    ChannelPresence,
    Delivered,
    Disconnected,
    History,
    Kicked,
    Presence,
    SessionInfo,
    Subscribed,
)


class Client:
    """A synchronous client of tether's HTTP API.

    ``base_url`` is the server (``http://127.0.0.1:8080``), ``api_key`` its ``api_key`` (sent as
    ``Authorization: Bearer``), ``timeout`` seconds per attempt (or an ``httpx.Timeout``),
    ``retry`` the :class:`RetryPolicy`. Pass ``http_client`` to share a configured
    ``httpx.Client`` (its base URL and headers are then yours to set; it is not closed by
    :meth:`close`). Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        api_key: Optional[str] = None,
        timeout: Union[float, httpx.Timeout] = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        headers: Optional[Mapping[str, str]] = None,
        http_client: Optional[httpx.Client] = None,
    ) -> None:
        self.retry = retry
        self._own = http_client is None
        self._http = http_client or httpx.Client(
            base_url=base_url.rstrip("/"), headers=core.headers(api_key, headers), timeout=timeout
        )

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (unless it was passed in as ``http_client``)."""
        if self._own:
            self._http.close()

    def _send(self, req: Request) -> Any:
        content = req.content()
        hdrs = {"content-type": "application/json"} if content is not None else None
        for attempt in range(self.retry.attempts):
            last = attempt + 1 == self.retry.attempts
            try:
                resp = self._http.request(req.method, req.path, params=req.params, content=content, headers=hdrs)
            except httpx.TransportError as e:
                if last or not core.retry_after(req, e, None, None):
                    raise TransportError(f"{req.method} {req.path}: {e!r}") from e
            else:
                if last or not core.retry_after(req, None, resp.status_code, core.error_code(resp)):
                    return core.decode(resp, req.answers)
            time.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    # ------------------------------------------------------------------ delivery

    def push(self, client_id: str, type: str, data: Any = None, *, idempotency_key: Optional[str] = None) -> Delivered:
        """Push to every session of a client id (202 ``stored`` with history on and nobody connected)."""
        return cast(Delivered, self._send(core.push(client_id, type, data, idempotency_key)))

    def push_to_session(
        self, session_id: str, type: str, data: Any = None, *, idempotency_key: Optional[str] = None
    ) -> Delivered:
        """Push to one session only (:class:`~tether_push.UnknownSession` when it is gone)."""
        return cast(Delivered, self._send(core.push_session(session_id, type, data, idempotency_key)))

    def publish(self, channel: str, type: str, data: Any = None, *, idempotency_key: Optional[str] = None) -> Delivered:
        """Publish to a channel's subscribers."""
        return cast(Delivered, self._send(core.publish(channel, type, data, idempotency_key)))

    def broadcast(self, type: str, data: Any = None) -> Delivered:
        """Send to every session. Not idempotent: retried only when the connection failed."""
        return cast(Delivered, self._send(core.broadcast(type, data)))

    def batch(self, commands: Sequence[Mapping[str, Any]]) -> List[BatchResult]:
        """Run up to 1,000 commands in one call (§14), e.g. ``[{"push": {...}}, {"subscribe": {...}}]``.

        Each answer is what the single call would have answered; a failed command does not raise.
        """
        return cast(List[BatchResult], self._send(core.batch(commands))["results"])

    # ------------------------------------------------------------------ channels

    def subscribe(self, client_id: str, channel: str, *, since: Optional[str] = None) -> Subscribed:
        """Join every session of a client id (and its later ones) to a channel."""
        return cast(Subscribed, self._send(core.subscribe(client_id, channel, since)))

    def unsubscribe(self, client_id: str, channel: str) -> Subscribed:
        """Take a client id's sessions off a channel, and forget it for later sessions."""
        return cast(Subscribed, self._send(core.unsubscribe(client_id, channel)))

    def channel_presence(self, channel: str) -> ChannelPresence:
        """Who is subscribed to a channel, cluster-wide."""
        return cast(ChannelPresence, self._send(core.channel_presence(channel)))

    def channels(
        self, *, prefix: Optional[str] = None, limit: Optional[int] = None, after: Optional[str] = None
    ) -> List[ChannelInfo]:
        """One page of channels with subscribers, by name; see :meth:`iter_channels`."""
        return cast(List[ChannelInfo], self._send(core.channels(prefix, limit, after)))

    def iter_channels(self, *, prefix: Optional[str] = None, page_size: int = 1000) -> Iterator[ChannelInfo]:
        """Every channel, fetched a page at a time."""
        after: Optional[str] = None
        while True:
            page = self.channels(prefix=prefix, limit=page_size, after=after)
            yield from page
            if len(page) < page_size:
                return
            after = page[-1]["channel"]

    def channel_history(
        self, channel: str, *, since: Optional[str] = None, limit: Optional[int] = None, reverse: Optional[bool] = None
    ) -> History:
        """What a channel's stream holds (after ``since``, at most ``limit``, newest first with ``reverse``)."""
        return cast(History, self._send(core.channel_history(channel, since, limit, reverse)))

    # ------------------------------------------------------------------ clients and sessions

    def presence(self, client_id: str) -> Presence:
        """Whether a client id is online, with how many sessions on which nodes."""
        return cast(Presence, self._send(core.presence(client_id)))

    def history(
        self, client_id: str, *, since: Optional[str] = None, limit: Optional[int] = None, reverse: Optional[bool] = None
    ) -> History:
        """What a client id's stream holds (:class:`~tether_push.HistoryOff` when history is off)."""
        return cast(History, self._send(core.history(client_id, since, limit, reverse)))

    def sessions(
        self, *, client_id: Optional[str] = None, limit: Optional[int] = None, after: Optional[str] = None
    ) -> List[SessionInfo]:
        """One page of sessions (of one client id, if given); see :meth:`iter_sessions`."""
        return cast(List[SessionInfo], self._send(core.sessions(client_id, limit, after)))

    def iter_sessions(self, *, client_id: Optional[str] = None, page_size: int = 1000) -> Iterator[SessionInfo]:
        """Every session, fetched a page at a time."""
        after: Optional[str] = None
        while True:
            page = self.sessions(client_id=client_id, limit=page_size, after=after)
            yield from page
            if len(page) < page_size:
                return
            after = page[-1]["session_id"]

    def disconnect_session(self, session_id: str) -> Disconnected:
        """Close one session with 4002 (:class:`~tether_push.UnknownSession` if unknown)."""
        return cast(Disconnected, self._send(core.disconnect_session(session_id)))

    def kick(self, client_id: str, *, block_for: Optional[Duration] = None) -> Kicked:
        """Close every session of a client id with 4002; with ``block_for``, refuse it until then."""
        return cast(Kicked, self._send(core.kick(client_id, block_for)))

    def blocks(self) -> List[Block]:
        """The blocks in force."""
        return cast(List[Block], self._send(core.blocks()))

    def unblock(self, client_id: str) -> Dict[str, Any]:
        """Lift a block."""
        return cast(Dict[str, Any], self._send(core.unblock(client_id)) or {})

    def health(self) -> Dict[str, Any]:
        """``GET /health``: ``{"status": "ok" | "degraded" | "draining", "connections", ...}`` (a 503 ``draining`` is returned, not raised)."""
        return cast(Dict[str, Any], self._send(core.health()))
