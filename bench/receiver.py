"""A small fast webhook receiver for the ``webhooks`` scenario: HTTP/1.1 on 127.0.0.1, keep-alive,
every request answered ``200`` with an empty body, counted. It checks nothing (the tests verify
signatures: tests/loyalty/ops/test_delivery_end_to_end.py): it is here to cost the worker as
little as a real receiver that answers at once.

    python -m bench.receiver [--port 8099]     # on its own, printing its count every second
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


@dataclass
class Counts:
    requests: int = 0
    connections: int = 0
    started: float = field(default_factory=time.monotonic)


class _Receiving(asyncio.Protocol):
    """Reads requests off one connection (several may come in one read) and answers each."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.counts.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.counts.requests += 1
            assert self.transport is not None
            self.transport.write(_ANSWER)


async def serve(port: int, counts: Counts) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Receiving(counts), "127.0.0.1", port)


@contextlib.contextmanager
def receiving() -> Iterator[tuple[str, Counts]]:
    """A receiver on a free port, served by a thread of its own while the block runs: its URL
    and its counts."""
    counts = Counts()
    ready = threading.Event()
    box: dict[str, object] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        box["loop"] = loop
        server = loop.run_until_complete(serve(0, counts))
        box["port"] = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.close()

    thread = threading.Thread(target=run, name="bench-receiver", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{box['port']}/hooks", counts
    finally:
        loop = box["loop"]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


async def _main(port: int) -> None:
    counts = Counts()
    server = await serve(port, counts)
    print(f"receiving on http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks",
          flush=True)
    seen = 0
    while True:
        await asyncio.sleep(1)
        print(f"{counts.requests} requests (+{counts.requests - seen}/s), "
              f"{counts.connections} connections", flush=True)
        seen = counts.requests


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="bench.receiver", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8099)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args().port))
