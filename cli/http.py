"""uvicorn's httptools protocol, sending each answer's head and first body bytes in one write.

uvicorn writes the status line and headers when the application starts its answer and the body
when it sends it: two ``send`` system calls for every answer, where one would do. In the
development VM a loopback ``send`` costs about 16 µs of CPU, and ``write`` was the largest
single item of the earn and read profiles (docs/performance.md). Here each request's cycle holds
the head back until its body's first write and sends both together. Everything else is
uvicorn's: parsing, keep-alive, flow control, ``100 Continue`` (written at once, before any
head), the 500 answer of an application that failed before answering.

It leans on two of uvicorn's names that are not public API: ``_start_asgi_task``, where a
request's cycle starts, and the cycle's ``transport`` and ``send`` attributes;
constraints.txt pins uvicorn, and tests/cli/test_http.py checks the answers on a real socket.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


class _HeadHeld:
    """One cycle's view of the connection: while ``holding``, what is written is the answer's
    head and waits; the next write carries it in front of its own bytes."""

    __slots__ = ("held", "holding", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.held = b""
        self.holding = False

    def write(self, data: bytes) -> None:
        if self.holding:
            self.held += data
            return
        if self.held:
            data, self.held = self.held + data, b""
        self.transport.write(data)

    def flush(self) -> None:
        if self.held:
            data, self.held = self.held, b""
            self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        # close, is_closing, get_extra_info...: the connection's own.
        return getattr(self.transport, name)


class OneWriteHttpTools(HttpToolsProtocol):
    """``loyalty serve``'s HTTP/1.1 protocol (uvicorn's ``http=`` setting)."""

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        connection = _HeadHeld(cycle.transport)
        send = cycle.send

        async def send_in_one(message: Any) -> None:
            if message["type"] == "http.response.start":
                connection.holding = True
                try:
                    await send(message)
                finally:
                    connection.holding = False
                return
            await send(message)
            connection.flush()  # a body message that wrote nothing must not keep the head

        cycle.transport = connection  # type: ignore[assignment]
        cycle.send = send_in_one  # type: ignore[method-assign]
        super()._start_asgi_task(cycle, app)
