"""The SDK's pure parts, without a server: error mapping, durations, the retry rule."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest

import tether_push
from tether_push import _core as core
from tether_push.errors import error_from_response


def body(code: str, message: str = "m") -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def test_errors_by_code_then_by_status() -> None:
    e = error_from_response(504, body("engine_timeout", "retry"))
    assert isinstance(e, tether_push.EngineTimeout) and isinstance(e, tether_push.ServerError)
    assert (e.status, e.code, e.message) == (504, "engine_timeout", "retry")
    # A code this version does not know still lands in its status's class.
    assert type(error_from_response(404, body("no_such_channel"))) is tether_push.NotFound
    assert type(error_from_response(400, body("bad_since"))) is tether_push.BadRequest
    assert type(error_from_response(503, b"<html>busy</html>")) is tether_push.ServerError
    odd = error_from_response(418, b"teapot")
    assert type(odd) is tether_push.TetherError and odd.code == "http_418" and odd.message == "teapot"
    assert type(error_from_response(429, body("too_many_connections"))) is tether_push.RateLimited
    assert type(error_from_response(403, body("blocked"))) is tether_push.Blocked


def test_durations_for_block_for() -> None:
    assert core.duration(60) == "60s"
    assert core.duration(1.5) == "1500ms"
    assert core.duration(timedelta(minutes=10)) == "600s"
    assert core.duration("2h") == "2h"
    with pytest.raises(ValueError):
        core.duration(0)


def test_keys_are_made_per_call_and_kept_for_its_retries() -> None:
    a, b = core.push("u", "t", None, None), core.push("u", "t", None, None)
    assert a.body and b.body and a.body["idempotency_key"] != b.body["idempotency_key"]
    assert a.content() == a.content()  # every attempt sends the same bytes
    assert core.publish("c", "t", 1, "mine").body == {"channel": "c", "type": "t", "data": 1, "idempotency_key": "mine"}
    batch = core.batch([{"push": {"client_id": "u", "type": "t"}}, {"subscribe": {"client_id": "u", "channel": "c"}}])
    assert batch.body and "idempotency_key" in batch.body["commands"][0]["push"] and batch.repeatable
    assert not core.batch([{"broadcast": {"type": "t"}}]).repeatable
    with pytest.raises(ValueError):
        core.batch([{"push": {}, "publish": {}}])


def test_what_is_retried() -> None:
    push, cast = core.push("u", "t", None, None), core.broadcast("t", None)
    refused = httpx.ConnectError("refused")
    lost = httpx.ReadError("reset")
    assert core.retry_after(push, refused, None, None) and core.retry_after(cast, refused, None, None)
    assert core.retry_after(push, lost, None, None) and not core.retry_after(cast, lost, None, None)
    for status in (502, 503, 504):
        assert core.retry_after(push, None, status, None) and not core.retry_after(cast, None, status, None)
    assert core.retry_after(push, None, 409, "in_progress")
    assert not core.retry_after(push, None, 500, "x") and not core.retry_after(push, None, 404, "no_session")


def test_retry_policy_bounds() -> None:
    p = tether_push.RetryPolicy(attempts=4, backoff=0.1, max_backoff=0.3, jitter=0)
    assert [p.delay(n) for n in range(4)] == [0.1, 0.2, 0.3, 0.3]
    with pytest.raises(ValueError):
        tether_push.RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        tether_push.Client("http://127.0.0.1:9", api_key="")


def test_path_segments_are_encoded() -> None:
    assert core.presence("a/b c").path == "/api/v1/presence/a%2Fb%20c"
    assert core.channel_presence("scores.*").path == "/api/v1/channels/scores.%2A/presence"
    assert core.history("u", None, 10, True).params == {"limit": "10", "reverse": "true"}
