"""A real HTTP receiver for webhook tests: a small asyncio HTTP/1.1 server on 127.0.0.1 that
records every request and answers as the test says; and the Standard Webhooks verification,
written here from the specification (not with the code under test)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import msgspec


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, object]:
        decoded: dict[str, object] = msgspec.json.decode(self.body)
        return decoded


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: tuple[tuple[str, str], ...] = ()
    # Never answer (the worker is killed meanwhile, or times out).
    hold: bool = False


# What to answer a request, given it and how many came before it.
Responder = Callable[[Received, int], Answer]


def always(answer: Answer) -> Responder:
    return lambda _request, _count: answer


@dataclass
class Receiver:
    responder: Responder = field(default_factory=lambda: always(Answer()))
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> None:
        """Listen (again, on the same port after ``stop``)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop open connections: the receiver is down."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                self._server.close_clients()  # type: ignore[attr-defined]
            await self._server.wait_closed()
            self._server = None

    async def wait_for(self, predicate: Callable[[list[Received]], bool], *,
                       seconds: float = 30.0) -> None:
        async with asyncio.timeout(seconds):
            while not predicate(self.received):
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await self._arrived.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _method, path, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Received(path, headers, body)
                count = len(self.received)
                self.received.append(request)
                self._arrived.set()
                answer = self.responder(request, count)
                if answer.hold:
                    await asyncio.sleep(3600)
                extra = "".join(f"{k}: {v}\r\n" for k, v in answer.headers)
                writer.write(
                    f"HTTP/1.1 {answer.status} X\r\ncontent-length: {len(answer.body)}\r\n"
                    f"{extra}\r\n".encode() + answer.body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def receiving(responder: Responder | None = None) -> AsyncIterator[Receiver]:
    receiver = Receiver(responder or always(Answer()))
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


TOLERANCE_SECONDS = 5 * 60


def verify(secret: str, received: Received) -> bool:
    """The Standard Webhooks verification: one of the space-separated ``v1,`` signatures is
    base64(HMAC-SHA256(base64-decoded secret, "{id}.{timestamp}.{body}")), and the timestamp
    is within five minutes of now."""
    message_id = received.headers["webhook-id"]
    timestamp = received.headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(
        key, f"{message_id}.{timestamp}.".encode() + received.body, hashlib.sha256).digest())
    for signature in received.headers["webhook-signature"].split(" "):
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return True
    return False
