"""A FastAPI backend that pushes through tether with the async client.

    pip install 'tether-push[fastapi]'
    TETHER_URL=http://127.0.0.1:8080 TETHER_API_KEY=... uvicorn fastapi_app:app

One AsyncClient (one connection pool) for the whole app, opened and closed with it. Its errors
become HTTP answers: a user with no open tab is not a server error.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict

from fastapi import Depends, FastAPI, HTTPException, Request

import tether_push


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with tether_push.AsyncClient(
        os.environ.get("TETHER_URL", "http://127.0.0.1:8080"),
        api_key=os.environ.get("TETHER_API_KEY"),
        timeout=5.0,
        retry=tether_push.RetryPolicy(attempts=4, backoff=0.2),
    ) as client:
        app.state.tether = client
        yield


app = FastAPI(lifespan=lifespan)


def tether(request: Request) -> tether_push.AsyncClient:
    client: tether_push.AsyncClient = request.app.state.tether
    return client


@app.post("/orders/{order_id}/shipped")
async def order_shipped(
    order_id: str, user_id: str, push: tether_push.AsyncClient = Depends(tether)
) -> Dict[str, Any]:
    """Tell every tab of the user. The order id makes the push idempotent across our own retries:
    a client that calls this twice (a double click, a retried webhook) notifies once."""
    try:
        sent = await push.push(
            user_id, "order_shipped", {"order_id": order_id}, idempotency_key=f"shipped-{order_id}"
        )
    except tether_push.NoSession:
        return {"delivered": 0, "online": False}
    except tether_push.IdempotencyKeyReused:
        raise HTTPException(409, "this order was already announced with other data")
    except tether_push.TetherError as e:
        raise HTTPException(502, f"push failed: {e.code}: {e.message}")
    return {"delivered": sent["delivered"], "online": True}


@app.post("/rooms/{room}/join")
async def join_room(room: str, user_id: str, push: tether_push.AsyncClient = Depends(tether)) -> Dict[str, Any]:
    """Subscribe the user's sessions, current and future, to the room's channel (server-side)."""
    joined = await push.subscribe(user_id, f"room.{room}")
    await push.publish(f"room.{room}", "joined", {"user": user_id})
    return {"sessions": joined["sessions"]}


@app.get("/rooms/{room}/members")
async def members(room: str, push: tether_push.AsyncClient = Depends(tether)) -> Dict[str, Any]:
    pres = await push.channel_presence(f"room.{room}")
    return {"members": [c["client_id"] for c in pres["clients"]]}


@app.delete("/users/{user_id}/sessions")
async def sign_out_everywhere(user_id: str, push: tether_push.AsyncClient = Depends(tether)) -> Dict[str, Any]:
    """Close every open connection of a user (for example after a password change)."""
    kicked = await push.kick(user_id)
    return {"closed": kicked["closed"]}
