"""Local stand-ins for message providers, one process each: `instock sandbox sms` (an SMS API:
`POST /messages` with `{"to", "body"}`) and `instock sandbox slack` (an incoming webhook:
`POST /webhook` with `{"text"}`). Each keeps what it receives (`GET /_sandbox/messages`) and
can be told to fail or to hang through `POST /_sandbox/config`, as the payment sandbox can:
`{"fail_status": 503}` answers every send so, `{"hang": true}` never answers, `{"fail_next": 2}`
fails the next two only. A repeated `Idempotency-Key` is answered as the first time."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class Config(BaseModel):
    fail_status: int | None = None
    fail_next: int = 0
    hang: bool = False


class Provider:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.config = Config()
        self.messages: list[dict[str, Any]] = []
        self.by_key: dict[str, dict[str, Any]] = {}
        self.attempts = 0


def create_app(kind: str) -> FastAPI:
    app = FastAPI(title=f"instock {kind} sandbox")
    provider = Provider(kind)
    path = "/messages" if kind == "sms" else "/webhook"

    @app.post(path)
    async def send(request: Request) -> JSONResponse:
        provider.attempts += 1
        if provider.config.hang:
            await asyncio.Event().wait()  # the caller's timeout ends it
        if provider.config.fail_next > 0:
            provider.config.fail_next -= 1
            return JSONResponse({"error": "failing as told"}, status_code=503)
        if provider.config.fail_status is not None:
            return JSONResponse({"error": "failing as told"},
                                status_code=provider.config.fail_status)
        key = request.headers.get("Idempotency-Key")
        if key and key in provider.by_key:
            return JSONResponse(provider.by_key[key])
        body = await request.json()
        stored = {"id": f"{kind}_{uuid.uuid4().hex[:16]}", "key": key, "body": body}
        provider.messages.append(stored)
        if key:
            provider.by_key[key] = stored
        return JSONResponse(stored)

    @app.get("/_sandbox/config")
    async def get_config() -> Config:
        return provider.config

    @app.post("/_sandbox/config")
    async def set_config(changes: dict[str, Any]) -> Config:
        provider.config = Config.model_validate({**provider.config.model_dump(), **changes})
        return provider.config

    @app.get("/_sandbox/messages")
    async def messages() -> dict[str, Any]:
        return {"messages": provider.messages, "attempts": provider.attempts}

    return app


def serve(kind: str, host: str, port: int) -> None:
    import uvicorn

    # A hung request would hold a graceful shutdown for ever: give it a second.
    uvicorn.run(create_app(kind), host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=1)
