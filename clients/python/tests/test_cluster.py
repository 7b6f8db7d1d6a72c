"""The SDK against a two-node cluster on a real redis-server (docs/protocol.md §9): a call sent to
one node reaches sessions on the other, and what it reads is cluster-wide."""

from __future__ import annotations

import asyncio
from typing import List

from conftest import Tether, peer, run


def test_calls_to_one_node_reach_sessions_on_the_other(cluster: List[Tether]) -> None:
    a, b = cluster

    async def body() -> None:
        on_b = await peer(b, "zoe")
        await on_b.subscribe("lobby")
        on_a = await peer(a, "yan")
        async with a.async_client() as api:
            pushed = await api.push("zoe", "notify", {"via": "a"})
            assert pushed["delivered"] == 1 and pushed["seq"] == 1
            assert (await api.publish("lobby", "say", "hello"))["delivered"] == 1
            assert (await api.broadcast("notice", 1))["delivered"] == 2

            pres = await api.presence("zoe")
            assert (pres["online"], pres["sessions"], pres["nodes"]) == (True, 1, ["py-b"])
            listed = await api.sessions(client_id="zoe")
            assert [(s["session_id"], s.get("node")) for s in listed] == [(on_b.session_id, "py-b")]
            everyone = [s async for s in api.iter_sessions(page_size=1)]
            assert sorted(s["client_id"] for s in everyone) == ["yan", "zoe"]

            # History lives in Redis: readable from the node that did not store it.
            async with b.async_client() as other:
                h = await other.history("zoe")
                assert [m["data"] for m in h["messages"]] == [{"via": "a"}]
                # A disconnect sent to node b closes the session on node a.
                assert (await other.disconnect_session(on_a.session_id))["closed"] is True
        assert (await on_b.recv_type("notify"))["data"] == {"via": "a"}
        assert (await on_b.recv_type("say"))["channel"] == "lobby"
        assert (await on_b.recv_type("notice"))["data"] == 1
        assert await on_a.closed() == 4002

    run(body())


def test_sync_client_against_either_node(cluster: List[Tether]) -> None:
    a, b = cluster

    async def body() -> None:
        p = await peer(a, "xia")
        with b.client() as api:
            got = await asyncio.to_thread(api.push, "xia", "ping", None, idempotency_key="k-1")
            again = await asyncio.to_thread(api.push, "xia", "ping", None, idempotency_key="k-1")
        # The idempotency key is cluster-wide: the repeat is answered, not delivered.
        assert got["delivered"] == again["delivered"] == 1
        assert (await p.recv_type("ping"))["type"] == "ping"
        assert await p.nothing_more() == []

    run(body())
