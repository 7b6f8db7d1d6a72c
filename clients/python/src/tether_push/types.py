"""The shapes of tether's answers (docs/protocol.md §5, §14), for type checkers and editors.

Answers are plain dicts decoded from JSON; these TypedDicts describe them. Keys marked
``NotRequired`` in the contract are ``total=False`` here.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List

if sys.version_info >= (3, 11):
    from typing import NotRequired, TypedDict
else:  # pragma: no cover - older Pythons
    from typing_extensions import NotRequired, TypedDict


class Delivered(TypedDict):
    """Push, publish, broadcast: sessions whose queue took the message."""

    delivered: int
    #: With history on: the message's position in its stream.
    seq: NotRequired[int]
    #: Push with history on and nobody connected: kept for the next resume (HTTP 202).
    stored: NotRequired[bool]
    #: In a cluster: a node did not answer within cluster_reply_timeout.
    partial: NotRequired[bool]


class Presence(TypedDict):
    client_id: str
    online: bool
    sessions: int
    nodes: List[str]


class PresenceClient(TypedDict):
    client_id: str
    sessions: int


class ChannelPresence(TypedDict):
    channel: str
    sessions: int
    clients: List[PresenceClient]


class ChannelInfo(TypedDict):
    channel: str
    sessions: int


class History(TypedDict):
    epoch: str
    seq: int
    recovered: NotRequired[bool]
    messages: List[Dict[str, Any]]


class SessionInfo(TypedDict):
    session_id: str
    client_id: str
    node: NotRequired[str]
    remote_addr: str
    connected_at: str
    last_seen_ms_ago: int
    channels: List[str]


class Disconnected(TypedDict):
    session_id: str
    closed: bool


class Subscribed(TypedDict):
    """Subscribe / unsubscribe: the sessions of the client id that joined or left."""

    sessions: int


class Kicked(TypedDict):
    closed: int
    #: With block_for: when the block ends (RFC 3339).
    until: NotRequired[str]


class Block(TypedDict):
    client_id: str
    until: str


class BatchResult(TypedDict):
    """One command's answer in a batch: what the single call would have answered."""

    status: int
    body: Dict[str, Any]
