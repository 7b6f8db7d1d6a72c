"""tether-push: the Python SDK for the HTTP API of the tether WebSocket push server.

```python
from tether_push import Client

with Client("http://127.0.0.1:8080", api_key="...") as tether:
    tether.push("user-42", "notify", {"text": "hi"})
    tether.publish("scores", "goal", {"team": "x"})
```

:class:`AsyncClient` has the same calls as coroutines. Every call raises a subclass of
:class:`TetherError` for an error answer; push and publish carry an idempotency key that their
retries reuse (see :class:`RetryPolicy`).
"""

from ._core import NO_RETRY, Duration, RetryPolicy, new_idempotency_key
from .async_client import AsyncClient
from .client import Client
from .errors import (
    BadChannel,
    BadClientId,
    BadRequest,
    Blocked,
    BodyTimeout,
    BodyTooLarge,
    Draining,
    EngineTimeout,
    EngineUnavailable,
    Forbidden,
    HistoryOff,
    IdempotencyKeyReused,
    InProgress,
    InvalidBody,
    InvalidJson,
    MethodNotAllowed,
    NoSession,
    NotFound,
    RateLimited,
    ServerError,
    ServerFull,
    TetherError,
    TransportError,
    Unauthorized,
    UnknownSession,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "BadChannel",
    "BadClientId",
    "BadRequest",
    "Blocked",
    "BodyTimeout",
    "BodyTooLarge",
    "Client",
    "Draining",
    "Duration",
    "EngineTimeout",
    "EngineUnavailable",
    "Forbidden",
    "HistoryOff",
    "IdempotencyKeyReused",
    "InProgress",
    "InvalidBody",
    "InvalidJson",
    "MethodNotAllowed",
    "NO_RETRY",
    "NoSession",
    "NotFound",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "ServerFull",
    "TetherError",
    "TransportError",
    "Unauthorized",
    "UnknownSession",
    "new_idempotency_key",
]
