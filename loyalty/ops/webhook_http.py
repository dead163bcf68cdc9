"""The HTTP/1.1 client webhook deliveries are sent with: pooled keep-alive connections, each
made to an address checked when it is made, and nothing else.

A delivery is one POST of a prepared body and one answer of which only the status, a
``Location`` and the first bytes are kept. httpx did that for about 1 ms of CPU per delivery,
nearly all of it in its request and pool layers, and one worker could not keep up with the
purchases the service records (docs/performance.md, "Webhooks"). Here a request is one
``write`` of its head and body on an ``asyncio.Protocol``, and the answer is parsed by
httptools (the C HTTP parser uvicorn serves with, already a dependency): about a tenth of that.

- **Addresses.** The host is resolved by ``resolve_checked`` and the connection made to the
  address checked, never to a name resolved again (DNS rebinding); the TLS server name and the
  ``Host`` header stay the URL's host.
- **Redirects** are answers like any other: never followed.
- **Keep-alive.** A connection goes back to the pool when its answer was complete and the
  receiver did not ask to close it, and is dropped after ``KEEPALIVE_SECONDS`` idle. A request
  on a reused connection that the receiver had closed meanwhile (nothing came back) is sent
  once more on a new connection, as browsers do; a receiver deduplicates by ``webhook-id``.
- **Answers** are read whole up to ``LONGEST_ANSWER`` bytes (so the connection can serve the
  next request); a longer one ends its connection once its first bytes are in.
- **Time.** The caller bounds each request (``asyncio.timeout``); a request cancelled mid-way
  closes its connection.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote, urlsplit

import certifi
import httptools

from loyalty.ops.webhooks import check_url_form, resolve_checked

# The first bytes of an answer kept for the delivery log.
HEAD_BYTES = 512
# An answer longer than this is not read to its end: its connection is closed instead.
LONGEST_ANSWER = 64 * 1024
KEEPALIVE_SECONDS = 5.0
_USER_AGENT = "loyalty-webhooks/1"
# Kept as they are in a request target; anything else is percent-encoded.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


class Answer(NamedTuple):
    status: int
    head: bytes
    location: str | None


class ReceiverError(Exception):
    """The receiver's side of the exchange went wrong: refused, reset, or not HTTP."""


@dataclass(frozen=True)
class _Target:
    """What a URL's requests need, worked out once per URL."""

    key: tuple[str, str, int]
    host: str
    port: int
    tls: bool
    # The request line and the Host header, with the port unless it is the scheme's own.
    request_head: bytes


class _Connection(asyncio.Protocol):
    """One connection to a receiver, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._answer: asyncio.Future[Answer] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._status = 0
        self._location: str | None = None
        self._head = bytearray()
        self._length = 0
        self._headers_done = False
        self._complete = False
        self._any_byte = False
        self.reusable = False

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._any_byte = True
        if self._parser is None:  # nothing was asked: a receiver talking out of turn
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ReceiverError(f"the answer is not HTTP/1.1: {exc}"))

    def eof_received(self) -> bool:
        self._end_of_stream()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._end_of_stream(exc)

    # -- httptools callbacks --

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"location":
            self._location = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._status = self._parser.get_status_code()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        if len(self._head) < HEAD_BYTES:
            self._head += body[:HEAD_BYTES - len(self._head)]
        self._length += len(body)
        if self._length > LONGEST_ANSWER:
            self._finish(reusable=False)
            self.close()

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer (100 Continue): the real one follows
            self._headers_done = False
            self._location = None
            return
        assert self._parser is not None
        self._finish(reusable=self._parser.should_keep_alive())

    # -- the exchange --

    def request(self, payload: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._status, self._location, self._length = 0, None, 0
        self._head = bytearray()
        self._headers_done = self._complete = self._any_byte = self.reusable = False
        self.transport.write(payload)
        return self._answer

    @property
    def answered_nothing(self) -> bool:
        return not self._any_byte

    def _finish(self, *, reusable: bool) -> None:
        if self._complete:
            return
        self._complete = True
        self.reusable = reusable and not self.closed
        self._parser = None
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(Answer(self._status, bytes(self._head), self._location))

    def _fail(self, exc: Exception) -> None:
        self._complete = True
        self._parser = None
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)
        self.close()

    def _end_of_stream(self, exc: Exception | None = None) -> None:
        if self._complete or self._answer is None:
            return
        if self._headers_done:  # an answer delimited by the connection's end
            self._finish(reusable=False)
        elif exc is not None:
            self._fail(ReceiverError(f"the connection was lost: {exc}"))
        elif self._any_byte:
            self._fail(ReceiverError("the receiver closed the connection mid-answer"))
        else:
            self._fail(ReceiverError("the receiver closed the connection without answering"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class DeliveryClient:
    """Sends webhook requests, keeping up to ``keep`` idle connections per receiver."""

    def __init__(self, *, allow_private: bool, keep: int) -> None:
        self._allow_private = allow_private
        self._keep = keep
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, headers: Sequence[tuple[str, str]], body: bytes) -> Answer:
        """POST ``body`` to ``url``; the answer. UnsafeUrl when the URL or its address is not
        allowed, ReceiverError or OSError when no answer came."""
        target = self._target(url)
        head = [target.request_head, b"content-length: %d\r\n" % len(body)]
        for name, value in headers:
            head += [name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n"]
        payload = b"".join(head) + b"\r\n" + body
        connection = self._reused(target)
        if connection is not None:
            try:
                return await self._exchange(target, connection, payload)
            except ReceiverError:
                if not connection.answered_nothing:
                    raise
            # The receiver had closed the idle connection: once more, on a new one.
        return await self._exchange(target, await self._connect(target), payload)

    async def _exchange(self, target: _Target, connection: _Connection,
                        payload: bytes) -> Answer:
        try:
            answer = await connection.request(payload)
        except BaseException:
            connection.close()
            raise
        if connection.reusable:
            connection.idle_since = time.monotonic()
            idle = self._idle.setdefault(target.key, [])
            if len(idle) < self._keep:
                idle.append(connection)
                return answer
        connection.close()
        return answer

    def _reused(self, target: _Target) -> _Connection | None:
        idle = self._idle.get(target.key)
        oldest = time.monotonic() - KEEPALIVE_SECONDS
        while idle:
            connection = idle.pop()
            if not connection.closed and connection.idle_since >= oldest:
                return connection
            connection.close()
        return None

    async def _connect(self, target: _Target) -> _Connection:
        addresses = await resolve_checked(target.host, target.port,
                                          allow_private=self._allow_private)
        loop = asyncio.get_running_loop()
        failure: OSError | None = None
        for address in addresses:
            try:
                _, connection = await loop.create_connection(
                    _Connection, str(address), target.port,
                    ssl=self._tls_context() if target.tls else None,
                    server_hostname=target.host if target.tls else None)
                return connection
            except OSError as exc:
                failure = exc
        assert failure is not None
        raise ReceiverError(f"could not connect to {target.host}:{target.port}: "
                            f"{failure.strerror or failure}")

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            host, port = check_url_form(url, allow_private=self._allow_private)
            parts = urlsplit(url)
            tls = parts.scheme == "https"
            path = quote(parts.path or "/", safe=_PATH_SAFE) + (
                f"?{quote(parts.query, safe=_PATH_SAFE + '?')}" if parts.query else "")
            name = f"[{host}]" if ":" in host else host.encode("idna").decode("ascii")
            if port != (443 if tls else 80):
                name += f":{port}"
            target = _Target(key=(parts.scheme, host, port), host=host, port=port, tls=tls,
                             request_head=(f"POST {path} HTTP/1.1\r\nhost: {name}\r\n"
                                           f"user-agent: {_USER_AGENT}\r\n").encode("ascii"))
            if len(self._targets) > 1_000:  # endpoints come and go; their URLs need not stay
                self._targets.clear()
            self._targets[url] = target
        return target

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=certifi.where())
        return self._tls

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
