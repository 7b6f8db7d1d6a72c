"""The SDK against a live tether (one node; docs/protocol.md §5, §8): what each call answers, and
what the WebSocket clients receive."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Callable

import pytest

import tether_push
from tether_push import RetryPolicy

from conftest import API_KEY, Tether, peer, run
from proxy import BAD_GATEWAY, DROP_ANSWER, FlakyProxy


def test_push_reaches_every_session_of_the_client_id(tether: Tether) -> None:
    async def body() -> None:
        a, b = await peer(tether, "alice"), await peer(tether, "alice")
        with tether.client() as api:
            got = await asyncio.to_thread(api.push, "alice", "notify", {"text": "hi", "n": [1, 2]})
        assert got == {"delivered": 2}
        for p in (a, b):
            msg = await p.recv_type("notify")
            assert msg["data"] == {"text": "hi", "n": [1, 2]}
            assert "timestamp" in msg

    run(body())


def test_push_to_one_session_and_the_errors_of_absent_targets(tether: Tether) -> None:
    async def body() -> None:
        a, b = await peer(tether, "bob"), await peer(tether, "bob")
        with tether.client() as api:
            got = await asyncio.to_thread(api.push_to_session, b.session_id, "only", 7)
            assert got == {"delivered": 1}
            assert (await b.recv_type("only"))["data"] == 7
            assert await a.nothing_more() == []
            with pytest.raises(tether_push.NoSession) as e:
                await asyncio.to_thread(api.push, "nobody", "notify")
            assert (e.value.status, e.value.code) == (404, "no_session")
            assert isinstance(e.value, tether_push.NotFound) and e.value.message
            with pytest.raises(tether_push.UnknownSession):
                await asyncio.to_thread(api.push_to_session, "0000000000000000", "x")

    run(body())


def test_publish_reaches_the_channel_subscribers_only(tether: Tether) -> None:
    async def body() -> None:
        sub, other = await peer(tether, "s1"), await peer(tether, "s2")
        await sub.subscribe("scores")
        with tether.client() as api:
            got = await asyncio.to_thread(api.publish, "scores", "goal", {"team": "x"})
        assert got == {"delivered": 1}
        msg = await sub.recv_type("goal")
        assert (msg["channel"], msg["data"]) == ("scores", {"team": "x"})
        assert await other.nothing_more() == []

    run(body())


def test_broadcast_reaches_everyone(tether: Tether) -> None:
    async def body() -> None:
        peers = [await peer(tether, f"b{i}") for i in range(3)]
        with tether.client() as api:
            assert await asyncio.to_thread(api.broadcast, "notice", "maintenance at 5") == {"delivered": 3}
        for p in peers:
            assert (await p.recv_type("notice"))["data"] == "maintenance at 5"

    run(body())


def test_presence_and_sessions_with_paging_then_disconnect(tether: Tether) -> None:
    async def body() -> None:
        peers = [await peer(tether, "carol") for _ in range(3)]
        await peer(tether, "dave")
        with tether.client() as api:
            pres = await asyncio.to_thread(api.presence, "carol")
            assert (pres["client_id"], pres["online"], pres["sessions"]) == ("carol", True, 3)
            assert (await asyncio.to_thread(api.presence, "nobody"))["online"] is False

            listed = await asyncio.to_thread(api.sessions, client_id="carol")
            assert sorted(s["session_id"] for s in listed) == sorted(p.session_id for p in peers)
            assert all(s["client_id"] == "carol" and s["channels"] == [] for s in listed)
            # A page at a time: all four sessions, each once.
            paged = await asyncio.to_thread(lambda: list(api.iter_sessions(page_size=1)))
            assert len(paged) == 4 and len({s["session_id"] for s in paged}) == 4
            assert len(await asyncio.to_thread(api.sessions, limit=2)) == 2

            gone = peers[0]
            answer = await asyncio.to_thread(api.disconnect_session, gone.session_id)
            assert answer == {"session_id": gone.session_id, "closed": True}
            assert await gone.closed() == 4002
            with pytest.raises(tether_push.UnknownSession) as e:
                await asyncio.to_thread(api.disconnect_session, gone.session_id)
            assert e.value.status == 404

    run(body())


def test_history_stores_for_the_absent_and_pages_with_since(tether_history: Tether) -> None:
    async def body() -> None:
        with tether_history.client() as api:
            first = await asyncio.to_thread(api.push, "erin", "n", 1)
            assert first["delivered"] == 0 and first["stored"] is True and first["seq"] == 1
            await asyncio.to_thread(api.push, "erin", "n", 2)
            await asyncio.to_thread(api.push, "erin", "n", 3)
            h = await asyncio.to_thread(api.history, "erin")
            assert [m["data"] for m in h["messages"]] == [1, 2, 3] and h["seq"] == 3
            after = await asyncio.to_thread(api.history, "erin", since=f"{h['epoch']}:1")
            assert [m["seq"] for m in after["messages"]] == [2, 3]
        # What was stored reaches the client when it resumes.
        p = await peer(tether_history, "erin", f"&since={h['epoch']}:1")
        assert p.welcome["data"]["recovered"] is True
        assert [(await p.recv())["data"] for _ in range(2)] == [2, 3]

    run(body())


def test_history_off_is_a_typed_error(tether: Tether) -> None:
    with tether.client() as api:
        with pytest.raises(tether_push.HistoryOff) as e:
            api.history("anyone")
    assert (e.value.status, e.value.code) == (404, "history_off")


def test_bad_requests_raise_their_own_classes(tether: Tether) -> None:
    with tether.client() as api:
        with pytest.raises(tether_push.InvalidBody) as e:
            api.publish("c", "welcome", None)  # a reserved type
        assert (e.value.status, e.value.code) == (400, "invalid_body")
        with pytest.raises(tether_push.BadClientId):
            api.push("x" * 300, "notify")
        with pytest.raises(tether_push.BadRequest):
            api.push("", "notify")
    with tether.client(api_key="wrong") as api:
        with pytest.raises(tether_push.Unauthorized) as u:
            api.broadcast("notice")
        assert u.value.status == 401
    with tether_push.Client(tether.http) as no_key:
        with pytest.raises(tether_push.Unauthorized):
            no_key.presence("a")


def test_the_same_key_is_delivered_once_and_another_body_is_refused(tether: Tether) -> None:
    async def body() -> None:
        p = await peer(tether, "fay")
        with tether.client() as api:
            a = await asyncio.to_thread(api.push, "fay", "pay", {"n": 1}, idempotency_key="order-1")
            b = await asyncio.to_thread(api.push, "fay", "pay", {"n": 1}, idempotency_key="order-1")
            assert a == b == {"delivered": 1}
            with pytest.raises(tether_push.IdempotencyKeyReused) as e:
                await asyncio.to_thread(api.push, "fay", "pay", {"n": 2}, idempotency_key="order-1")
            assert (e.value.status, e.value.code) == (422, "idempotency_key_reused")
        assert (await p.recv_type("pay"))["data"] == {"n": 1}
        assert await p.nothing_more() == []

    run(body())


def test_a_lost_answer_is_retried_with_the_same_key_and_delivered_once(tether: Tether) -> None:
    """The answer to the first attempt is lost after tether delivered; the retry carries the
    key the SDK generated, so tether answers it as the first and delivers nothing twice."""

    async def body() -> None:
        p = await peer(tether, "gus")
        await p.subscribe("room")
        proxy = FlakyProxy(tether.addr, [DROP_ANSWER, BAD_GATEWAY])
        try:
            policy = RetryPolicy(attempts=3, backoff=0.01)
            with tether_push.Client(proxy.url, api_key=API_KEY, retry=policy, timeout=5) as api:
                got = await asyncio.to_thread(api.push, "gus", "pay", {"n": 1})
                assert got == {"delivered": 1}
                assert proxy.seen[:3] == [DROP_ANSWER, BAD_GATEWAY, "pipe"]
                proxy.plan = [DROP_ANSWER]
                assert (await asyncio.to_thread(api.publish, "room", "say", "hi"))["delivered"] == 1
        finally:
            proxy.close()
        assert (await p.recv_type("pay"))["data"] == {"n": 1}
        assert (await p.recv_type("say"))["data"] == "hi"
        assert await p.nothing_more() == []

    run(body())


def test_broadcast_is_not_repeated_after_a_lost_answer(tether: Tether) -> None:
    async def body() -> None:
        p = await peer(tether, "hal")
        proxy = FlakyProxy(tether.addr, [DROP_ANSWER])
        try:
            with tether_push.Client(proxy.url, api_key=API_KEY, retry=RetryPolicy(backoff=0.01)) as api:
                with pytest.raises(tether_push.TransportError) as e:
                    await asyncio.to_thread(api.broadcast, "once", 1)
                assert e.value.status is None and e.value.code == "transport_error"
        finally:
            proxy.close()
        assert (await p.recv_type("once"))["data"] == 1
        assert await p.nothing_more() == []

    run(body())


def test_retries_are_bounded_and_give_up_with_a_transport_error() -> None:
    from conftest import free_port

    port = free_port()  # nothing listens there
    policy = RetryPolicy(attempts=3, backoff=0.05, max_backoff=0.05, jitter=0)
    started = time.monotonic()
    with tether_push.Client(f"http://127.0.0.1:{port}", retry=policy, timeout=1) as api:
        with pytest.raises(tether_push.TransportError):
            api.push("a", "b")
    # Three attempts, two waits of 50 ms: well under a second, and not instant.
    assert 0.09 < time.monotonic() - started < 3


def test_503_is_retried_then_raised_as_its_class() -> None:
    """A proxy that answers 502 every time: the SDK tries `attempts` times, then raises."""
    proxy = FlakyProxy("127.0.0.1:9", [BAD_GATEWAY] * 5)
    try:
        with tether_push.Client(proxy.url, retry=RetryPolicy(attempts=3, backoff=0.01)) as api:
            with pytest.raises(tether_push.ServerError) as e:
                api.presence("a")
        assert e.value.status == 502 and e.value.code == "http_502"
        assert proxy.seen == [BAD_GATEWAY] * 3
    finally:
        proxy.close()


def test_async_client_does_the_same(tether_history: Tether) -> None:
    async def body() -> None:
        p = await peer(tether_history, "ivy")
        await p.subscribe("news")
        async with tether_history.async_client() as api:
            assert (await api.push("ivy", "notify", "x"))["delivered"] == 1
            assert (await api.publish("news", "post", "y"))["delivered"] == 1
            assert (await api.broadcast("all", "z"))["delivered"] == 1
            assert (await api.presence("ivy"))["sessions"] == 1
            assert [s["session_id"] async for s in api.iter_sessions(page_size=1)] == [p.session_id]
            h = await api.history("ivy")
            assert [m["data"] for m in h["messages"]] == ["x"]
            with pytest.raises(tether_push.UnknownSession):
                await api.disconnect_session("0000000000000000")
        assert [(await p.recv())["type"] for _ in range(3)] == ["notify", "post", "all"]

    run(body())


def test_health_answers_while_serving(tether: Tether) -> None:
    async def body() -> None:
        await peer(tether, "hank")
        with tether.client() as api:
            h = await asyncio.to_thread(api.health)
        assert h["status"] == "ok" and h["connections"] == 1

    run(body())


def test_health_reports_draining_instead_of_raising(start_tether: Callable[..., Tether]) -> None:
    node = start_tether("--shutdown-timeout", "10s")

    async def body() -> None:
        p = await peer(node, "ida")  # keeps the drain going
        node.proc.send_signal(signal.SIGTERM)
        assert (await p.recv_type("shutdown"))["data"]["mode"] == "drain"
        with node.client(retry=tether_push.NO_RETRY) as api:
            h = await asyncio.to_thread(api.health)
        assert h["status"] == "draining"

    run(body())
