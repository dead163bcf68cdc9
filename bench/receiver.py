"""A small fast webhook receiver for the ``webhooks`` scenario: HTTP/1.1 on 127.0.0.1, keep-alive,
every request answered ``200`` with an empty body, counted. It checks nothing (the tests verify
signatures: tests/loyalty/ops/test_delivery_end_to_end.py): it is here to cost the worker as
little as a real receiver that answers at once.

It stands for a brand's CRM on another machine, so the scenario runs it as a process of its own
at the lowest priority (``receiving``): it answers when the machine has a moment, and its CPU
is not taken from the service it measures (9 µs of CPU a request under wrk at 111,000
requests/s; during an on phase, under 1,000 a second with less batching, about 1 % of the
two cores). ``GET /count`` answers how many
deliveries it counted.

    python -m bench.receiver [--port 8099]     # on its own, printing its count every second
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
            asks_count = self.buffer.startswith(b"GET /count ")
            self.buffer = self.buffer[end + 4 + length:]
            assert self.transport is not None
            if asks_count:
                body = str(self.counts.requests).encode()
                self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
                                     % (len(body), body))
                continue
            self.counts.requests += 1
            self.transport.write(_ANSWER)


async def serve(port: int, counts: Counts) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Receiving(counts), "127.0.0.1", port)


class Counted:
    """What the receiver process counted, asked for when read."""

    def __init__(self, port: int) -> None:
        self.port = port

    @property
    def requests(self) -> int:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(b"GET /count HTTP/1.1\r\nhost: bench\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.split(b"\r\n\r\n", 1)[1]:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        return int(answer.split(b"\r\n\r\n", 1)[1])


@contextlib.contextmanager
def receiving() -> Iterator[tuple[str, Counted]]:
    """A receiver on a free port, in a process of its own at the lowest priority, while the
    block runs: its URL and its counts."""
    process = subprocess.Popen(
        ["nice", "-n", "19", sys.executable, "-m", "bench.receiver", "--port", "0",
         "--quiet"],
        cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # "receiving on <url>"
        url = first.split()[-1]
        yield url, Counted(int(url.rsplit(":", 1)[1].split("/", 1)[0]))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _main(port: int, *, quiet: bool) -> None:
    counts = Counts()
    server = await serve(port, counts)
    print(f"receiving on http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks",
          flush=True)
    seen = 0
    while True:
        await asyncio.sleep(1)
        if not quiet:
            print(f"{counts.requests} requests (+{counts.requests - seen}/s), "
                  f"{counts.connections} connections", flush=True)
        seen = counts.requests


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="bench.receiver", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--quiet", action="store_true", help="print only the URL")
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(arguments.port, quiet=arguments.quiet))
