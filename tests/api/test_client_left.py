"""A client that goes away while its request body is still arriving: nothing failed on the
server, so nothing is logged or counted as a server error (a till losing its network mid-send,
a benchmark's connections closed at its end)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from litestar import Litestar


async def _cut_short(app: Litestar, path: str) -> list[dict[str, Any]]:
    """POST to ``path`` through ASGI: part of a JSON body, then the client is gone."""
    sent: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"email": "half', "more_body": True},
        {"type": "http.disconnect"},
    ]
    arrivals = iter(messages)

    async def receive() -> dict[str, Any]:
        return next(arrivals, {"type": "http.disconnect"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver.local"),
                         (b"content-type", b"application/json"),
                         (b"content-length", b"64")],
             "client": ("testclient", 50000), "server": ("testserver.local", 80),
             "state": {}}
    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent


async def test_a_client_gone_mid_body_is_no_server_error(
    app: Litestar, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture,
) -> None:
    assert client  # the app's lifespan runs
    with caplog.at_level(logging.INFO):
        sent = await _cut_short(app, "/v1/auth/member/login")
    [start] = [m for m in sent if m["type"] == "http.response.start"]
    assert start["status"] == 400
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b"request_incomplete" in body
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("left before its request body arrived" in r.getMessage()
               for r in caplog.records)
