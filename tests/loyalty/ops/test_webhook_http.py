"""The delivery client against a raw TCP server that answers with the bytes each test gives:
framing (length, chunks, the connection's end), keep-alive and its reuse, receivers that close,
misbehave or answer at length."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from loyalty.ops.webhook_http import HEAD_BYTES, LONGEST_ANSWER, DeliveryClient, ReceiverError
from loyalty.ops.webhooks import UnsafeUrl

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@dataclass
class RawServer:
    """Reads each request whole (head and content-length body) and writes what ``answer``
    returns for it; ``close_after`` closes the connection after that answer."""

    answer: Callable[[int], bytes]
    close_after: Callable[[int], bool] = lambda _n: False
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                self.requests.append(head + await reader.readexactly(length))
                number = len(self.requests)
                writer.write(self.answer(number))
                await writer.drain()
                if self.close_after(number):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@asynccontextmanager
async def raw_server(answer: Callable[[int], bytes],
                     close_after: Callable[[int], bool] = lambda _n: False,
                     ) -> AsyncIterator[RawServer]:
    server = RawServer(answer, close_after)
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listening.close()


@asynccontextmanager
async def client() -> AsyncIterator[DeliveryClient]:
    made = DeliveryClient(allow_private=True, keep=4)
    try:
        yield made
    finally:
        await made.aclose()


HEADERS = (("content-type", "application/json"), ("webhook-id", "msg_1"))


async def test_a_request_is_one_post_with_its_headers_and_body() -> None:
    async with raw_server(lambda _n: OK) as server, client() as sender:
        answer = await sender.post(server.url("/in/hooks?brand=a b"), HEADERS, b'{"a":1}')
    assert (answer.status, answer.head, answer.location) == (200, b"ok", None)
    [request] = server.requests
    head, body = request.split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /in/hooks?brand=a%20b HTTP/1.1"
    assert set(lines[1:]) == {f"host: 127.0.0.1:{server.port}".encode(),
                              b"user-agent: loyalty-webhooks/1", b"content-length: 7",
                              b"content-type: application/json", b"webhook-id: msg_1"}
    assert body == b'{"a":1}'


async def test_keep_alive_connections_serve_the_next_requests() -> None:
    async with raw_server(lambda _n: OK) as server, client() as sender:
        for _ in range(5):
            assert (await sender.post(server.url(), HEADERS, b"{}")).status == 200
    assert server.connections == 1
    assert len(server.requests) == 5


async def test_side_by_side_requests_use_side_by_side_connections() -> None:
    async with raw_server(lambda _n: OK) as server, client() as sender:
        answers = await asyncio.gather(*(sender.post(server.url(), HEADERS, b"{}")
                                         for _ in range(3)))
        again = await asyncio.gather(*(sender.post(server.url(), HEADERS, b"{}")
                                       for _ in range(3)))
    assert [a.status for a in answers + again] == [200] * 6
    assert server.connections == 3


async def test_a_chunked_answer_is_read_to_its_end_and_its_connection_kept() -> None:
    chunked = (b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    async with raw_server(lambda _n: chunked) as server, client() as sender:
        first = await sender.post(server.url(), HEADERS, b"{}")
        second = await sender.post(server.url(), HEADERS, b"{}")
    assert (first.status, first.head) == (202, b"hello world")
    assert second.status == 202
    assert server.connections == 1


async def test_an_answer_that_asks_to_close_is_not_reused() -> None:
    closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    async with raw_server(lambda _n: closing, close_after=lambda _n: True) as server, \
            client() as sender:
        for _ in range(3):
            assert (await sender.post(server.url(), HEADERS, b"{}")).status == 200
    assert server.connections == 3


async def test_an_answer_ended_by_closing_the_connection_counts() -> None:
    """HTTP/1.0 style: no length, the body ends with the connection."""
    unframed = b"HTTP/1.0 200 OK\r\n\r\nthanks"
    async with raw_server(lambda _n: unframed, close_after=lambda _n: True) as server, \
            client() as sender:
        answer = await sender.post(server.url(), HEADERS, b"{}")
        again = await sender.post(server.url(), HEADERS, b"{}")
    assert (answer.status, answer.head) == (200, b"thanks")
    assert again.status == 200
    assert server.connections == 2


async def test_a_long_answer_keeps_its_first_bytes_and_ends_its_connection() -> None:
    size = LONGEST_ANSWER * 2
    long = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"x" * size
    async with raw_server(lambda _n: long) as server, client() as sender:
        answer = await sender.post(server.url(), HEADERS, b"{}")
        await sender.post(server.url(), HEADERS, b"{}")
    assert answer.status == 200
    assert answer.head == b"x" * HEAD_BYTES
    assert server.connections == 2


async def test_a_redirect_comes_back_as_an_answer_with_its_location() -> None:
    moved = (b"HTTP/1.1 308 Permanent Redirect\r\nlocation: https://else.example/\r\n"
             b"content-length: 0\r\n\r\n")
    async with raw_server(lambda _n: moved) as server, client() as sender:
        answer = await sender.post(server.url(), HEADERS, b"{}")
    assert (answer.status, answer.location) == (308, "https://else.example/")
    assert len(server.requests) == 1


async def test_an_interim_answer_is_skipped_for_the_real_one() -> None:
    both = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    async with raw_server(lambda _n: both) as server, client() as sender:
        answer = await sender.post(server.url(), HEADERS, b"{}")
    assert (answer.status, answer.head) == (200, b"ok")


async def test_a_kept_connection_the_receiver_drops_unanswered_is_replaced_once() -> None:
    """The receiver drops its kept connection as the second request arrives (as one does when
    its idle timeout and the request cross): the request goes out again on a new connection."""
    async with raw_server(lambda n: b"" if n == 2 else OK,
                          close_after=lambda n: n == 2) as server, client() as sender:
        first = await sender.post(server.url(), HEADERS, b"{}")
        second = await sender.post(server.url(), HEADERS, b"{}")
    assert (first.status, second.status) == (200, 200)
    assert len(server.requests) == 3
    assert server.connections == 2


async def test_a_connection_dropped_after_part_of_an_answer_is_not_retried() -> None:
    cut = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n"
    async with raw_server(lambda n: OK if n == 1 else cut,
                          close_after=lambda n: n == 2) as server, client() as sender:
        await sender.post(server.url(), HEADERS, b"{}")
        with pytest.raises(ReceiverError, match="mid-answer"):
            await sender.post(server.url(), HEADERS, b"{}")
    assert len(server.requests) == 2


async def test_a_receiver_that_closes_without_answering_is_an_error() -> None:
    async with raw_server(lambda _n: b"", close_after=lambda _n: True) as server, \
            client() as sender:
        with pytest.raises(ReceiverError, match="closed the connection without answering"):
            await sender.post(server.url(), HEADERS, b"{}")


async def test_an_answer_that_is_not_http_is_an_error() -> None:
    async with raw_server(lambda _n: b"SSH-2.0-OpenSSH\r\n\r\n") as server, client() as sender:
        with pytest.raises(ReceiverError, match="not HTTP"):
            await sender.post(server.url(), HEADERS, b"{}")


async def test_nobody_listening_is_an_error_naming_the_address() -> None:
    async with raw_server(lambda _n: OK) as server:
        port = server.port
    async with client() as sender:
        with pytest.raises(ReceiverError, match=f"could not connect to 127.0.0.1:{port}"):
            await sender.post(f"http://127.0.0.1:{port}/", HEADERS, b"{}")


async def test_a_request_cut_short_by_its_deadline_leaves_no_connection_behind() -> None:
    async with raw_server(lambda _n: b"") as server, client() as sender:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await sender.post(server.url(), HEADERS, b"{}")
        assert sender._idle.get(("http", "127.0.0.1", server.port), []) == []


async def test_private_addresses_are_refused_unless_allowed() -> None:
    async with raw_server(lambda _n: OK) as server:
        sender = DeliveryClient(allow_private=False, keep=1)
        try:
            with pytest.raises(UnsafeUrl):
                await sender.post(server.url().replace("http:", "https:"), HEADERS, b"{}")
        finally:
            await sender.aclose()
        assert server.requests == []


async def test_an_ipv6_host_is_bracketed_in_the_host_header() -> None:
    sender = DeliveryClient(allow_private=True, keep=1)
    target = sender._target("http://[::1]:8443/h")
    assert target.request_head.startswith(b"POST /h HTTP/1.1\r\nhost: [::1]:8443\r\n")
    assert sender._target("https://hooks.example/h").request_head.split(b"\r\n")[1] == \
        b"host: hooks.example"
