"""``loyalty serve``'s HTTP protocol (cli/http.py) on a real socket through uvicorn: every kind
of answer arrives whole and as HTTP/1.1 says, and a plain answer leaves in one write."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from cli.http import OneWriteHttpTools

WRITES: list[bytes] = []


class _Counted:
    """The connection's real transport, with each write noted."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def write(self, data: bytes) -> None:
        WRITES.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class _CountedProtocol(OneWriteHttpTools):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(_Counted(transport))  # type: ignore[arg-type]


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if path == "/fail-after-start":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"5")]})
        raise RuntimeError("the application failed mid-answer")
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    answer = b"echo:" + body if body else b"hello"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


@contextlib.asynccontextmanager
async def _served() -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app, http=_CountedProtocol, lifespan="off",
                                           log_level="critical", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    # uvicorn's Server offers a flag, no event to wait on.
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def _exchange(port: int, raw: bytes, *, until: bytes | None = None) -> bytes:
    """Send ``raw``; read until ``until`` has arrived, or until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        got = b""
        async with asyncio.timeout(5):
            while until is None or until not in got:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                got += chunk
        return got
    finally:
        writer.close()


@pytest.fixture(autouse=True)
def _no_writes_yet() -> None:
    WRITES.clear()


async def test_a_plain_answer_leaves_in_one_write() -> None:
    async with _served() as port:
        got = await _exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", until=b"hello")
    assert got.startswith(b"HTTP/1.1 200 OK\r\n")
    assert got.endswith(b"\r\n\r\nhello")
    assert len(WRITES) == 1
    assert WRITES[0] == got


async def test_pipelined_requests_each_get_their_answer_in_order() -> None:
    async with _served() as port:
        got = await _exchange(
            port, b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\none"
                  b"POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\ntwo",
            until=b"echo:two")
    assert got.count(b"HTTP/1.1 200 OK") == 2
    assert got.index(b"echo:one") < got.index(b"echo:two")
    assert len(WRITES) == 2


async def test_a_streamed_answer_is_chunked_with_its_head_first() -> None:
    async with _served() as port:
        got = await _exchange(port, b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n",
                              until=b"0\r\n\r\n")
    head, _, body = got.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert body == b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"
    assert WRITES[0].startswith(b"HTTP/1.1 200 OK")
    assert WRITES[0].endswith(b"one \r\n")


async def test_an_answer_without_body_and_a_head_request_still_send_their_heads() -> None:
    async with _served() as port:
        empty = await _exchange(port, b"GET /empty HTTP/1.1\r\nhost: x\r\n\r\n",
                                until=b"\r\n\r\n")
        head = await _exchange(port, b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n", until=b"\r\n\r\n")
    assert empty.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 5" in head
    assert head.endswith(b"\r\n\r\n")


async def test_expect_100_continue_is_answered_before_the_body_is_sent() -> None:
    async with _served() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n"
                         b"expect: 100-continue\r\n\r\n")
            async with asyncio.timeout(5):
                interim = await reader.readuntil(b"\r\n\r\n")
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"body")
            async with asyncio.timeout(5):
                final = await reader.readuntil(b"echo:body")
        finally:
            writer.close()
    assert final.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_an_application_failing_mid_answer_closes_the_connection() -> None:
    async with _served() as port:
        got = await _exchange(port, b"GET /fail-after-start HTTP/1.1\r\nhost: x\r\n\r\n")
    # The head was held for the body that never came: the client sees the connection end
    # (with uvicorn's own protocol it saw a head promising 5 bytes, then the end).
    assert got == b""
    assert WRITES == []
