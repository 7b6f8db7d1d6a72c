"""The SDK's server-side control calls (docs/protocol.md §14: subscribe, channels, channel presence
and history, paging with limit/reverse, kick/block, batch) against a live tether, one node and a
two-node cluster. Written against the contract while the endpoints were being built; see
clients/python/README.md."""

from __future__ import annotations

import asyncio
from typing import List

import pytest
from websockets.exceptions import InvalidStatus

import tether_push

from conftest import FRAME_WITHIN, Tether, peer, run


def test_subscribe_joins_every_session_now_and_later(tether_history: Tether) -> None:
    t = tether_history

    async def body() -> None:
        a, b = await peer(t, "ann"), await peer(t, "ann")
        async with t.async_client() as api:
            assert await api.subscribe("ann", "team.1") == {"sessions": 2}
            for p in (a, b):
                msg = await p.recv_type("subscribed")
                assert msg["data"]["channel"] == "team.1" and msg["data"]["by"] == "server"
            later = await peer(t, "ann")
            assert (await later.recv_type("subscribed"))["data"]["channel"] == "team.1"
            assert (await api.publish("team.1", "post", 1))["delivered"] == 3

            assert await api.unsubscribe("ann", "team.1") == {"sessions": 3}
            for p in (a, b, later):
                msg = await p.recv_type("unsubscribed")
                assert msg["data"]["channel"] == "team.1" and msg["data"]["by"] == "server"
            assert (await api.publish("team.1", "post", 2))["delivered"] == 0
            after = await peer(t, "ann")
            assert await after.nothing_more() == []

    run(body())


def test_channel_presence_counts_sessions_per_client_id(tether: Tether) -> None:
    async def body() -> None:
        for who in ("ann", "ann", "ben"):
            await (await peer(tether, who)).subscribe("team.2")
        async with tether.async_client() as api:
            pres = await api.channel_presence("team.2")
        assert pres["channel"] == "team.2" and pres["sessions"] == 3
        assert sorted(pres["clients"], key=lambda c: c["client_id"]) == [
            {"client_id": "ann", "sessions": 2},
            {"client_id": "ben", "sessions": 1},
        ]

    run(body())


def test_channels_are_listed_by_prefix_a_page_at_a_time(tether: Tether) -> None:
    async def body() -> None:
        p = await peer(tether, "lister")
        for ch in ("game.1", "game.2", "game.3", "chat.1"):
            await p.subscribe(ch)
        with tether.client() as api:
            games = await asyncio.to_thread(api.channels, prefix="game.")
            assert games == [{"channel": f"game.{i}", "sessions": 1} for i in (1, 2, 3)]
            first = await asyncio.to_thread(api.channels, prefix="game.", limit=2)
            assert [c["channel"] for c in first] == ["game.1", "game.2"]
            rest = await asyncio.to_thread(api.channels, prefix="game.", limit=2, after="game.2")
            assert [c["channel"] for c in rest] == ["game.3"]
            every = await asyncio.to_thread(lambda: [c["channel"] for c in api.iter_channels(page_size=1)])
            assert every == ["chat.1", "game.1", "game.2", "game.3"]

    run(body())


def test_history_pages_with_limit_and_reverse(tether_history: Tether) -> None:
    with tether_history.client() as api:
        for i in range(1, 6):
            api.push("pat", "n", i)
            api.publish("feed", "n", i)
        h = api.history("pat", limit=2)
        assert [m["seq"] for m in h["messages"]] == [1, 2]
        newest = api.history("pat", limit=2, reverse=True)
        assert [m["seq"] for m in newest["messages"]] == [5, 4]
        ch = api.channel_history("feed")
        assert [m["data"] for m in ch["messages"]] == [1, 2, 3, 4, 5] and ch["seq"] == 5
        tail = api.channel_history("feed", since=f"{ch['epoch']}:3")
        assert [m["seq"] for m in tail["messages"]] == [4, 5]
        assert [m["seq"] for m in api.channel_history("feed", limit=1, reverse=True)["messages"]] == [5]


def test_kick_with_block_then_unblock(tether: Tether) -> None:
    async def body() -> None:
        a, b = await peer(tether, "troll"), await peer(tether, "troll")
        async with tether.async_client() as api:
            kicked = await api.kick("troll", block_for=60)
            assert kicked["closed"] == 2
            assert await a.closed() == 4002 and await b.closed() == 4002
            with pytest.raises(InvalidStatus) as refused:
                await peer(tether, "troll")
            assert refused.value.response.status_code == 403
            blocks = await api.blocks()
            assert [x["client_id"] for x in blocks] == ["troll"] and blocks[0]["until"]
            await api.unblock("troll")
            assert await api.blocks() == []
            back = await peer(tether, "troll")
            assert back.session_id
            # Without block_for the client may come straight back.
            assert (await api.kick("troll"))["closed"] == 1
            assert await back.closed() == 4002
            await peer(tether, "troll")

    run(body())


def test_batch_answers_each_command_in_order(tether: Tether) -> None:
    async def body() -> None:
        p = await peer(tether, "bea")
        with tether.client() as api:
            results = await asyncio.to_thread(
                api.batch,
                [
                    {"subscribe": {"client_id": "bea", "channel": "ops"}},
                    {"push": {"client_id": "bea", "type": "one", "data": 1}},
                    {"publish": {"channel": "ops", "type": "two", "data": 2}},
                    {"push": {"client_id": "ghost", "type": "lost"}},
                    {"broadcast": {"type": "three", "data": 3}},
                ],
            )
        assert [r["status"] for r in results] == [200, 200, 200, 404, 200]
        assert results[0]["body"] == {"sessions": 1}
        assert results[1]["body"]["delivered"] == 1
        assert results[3]["body"]["error"]["code"] == "no_session"
        assert (await p.recv_type("one"))["data"] == 1
        assert (await p.recv_type("two"))["channel"] == "ops"
        assert (await p.recv_type("three"))["data"] == 3

    run(body())


def test_batch_of_keyed_pushes_survives_a_lost_answer(tether: Tether) -> None:
    """The SDK gives each push in a batch its own key, so a retried batch delivers once."""
    from conftest import API_KEY
    from proxy import DROP_ANSWER, FlakyProxy

    async def body() -> None:
        p = await peer(tether, "kim")
        proxy = FlakyProxy(tether.addr, [DROP_ANSWER])
        try:
            with tether_push.Client(proxy.url, api_key=API_KEY, retry=tether_push.RetryPolicy(backoff=0.01)) as api:
                cmds = [{"push": {"client_id": "kim", "type": "n", "data": i}} for i in range(3)]
                results = await asyncio.to_thread(api.batch, cmds)
            assert [r["status"] for r in results] == [200, 200, 200]
        finally:
            proxy.close()
        assert [(await p.recv_type("n"))["data"] for _ in range(3)] == [0, 1, 2]
        assert await p.nothing_more() == []

    run(body())


def test_control_is_cluster_wide(cluster: List[Tether]) -> None:
    a, b = cluster

    async def body() -> None:
        on_a, on_b = await peer(a, "mo"), await peer(b, "mo")
        async with b.async_client() as api:
            assert await api.subscribe("mo", "room") == {"sessions": 2}
            for p in (on_a, on_b):
                assert (await p.recv_type("subscribed"))["data"]["by"] == "server"
            assert (await api.kick("mo", block_for="1m"))["closed"] == 2
        for p in (on_a, on_b):
            assert await p.closed(FRAME_WITHIN) == 4002
        with pytest.raises(InvalidStatus) as refused:
            await peer(a, "mo")
        assert refused.value.response.status_code == 403

    run(body())


def test_channel_listings_are_cluster_wide(cluster: List[Tether]) -> None:
    a, b = cluster

    async def body() -> None:
        await (await peer(a, "nia")).subscribe("hall")
        await (await peer(b, "oto")).subscribe("hall")
        async with b.async_client() as api:
            pres = await api.channel_presence("hall")
            assert pres["sessions"] == 2
            assert sorted(c["client_id"] for c in pres["clients"]) == ["nia", "oto"]
            assert await api.channels(prefix="hall") == [{"channel": "hall", "sessions": 2}]

    run(body())
