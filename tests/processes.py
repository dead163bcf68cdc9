"""Helpers for tests and tools that start the service as a process of its own."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ready(base: str, server: subprocess.Popen[bytes], *, seconds: float) -> None:
    """Until ``base``/health/ready answers 200; RuntimeError, with the server's error output
    when it was captured, if the process ends or ``seconds`` pass first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            said = server.stderr.read().decode() if server.stderr else ""
            raise RuntimeError(f"the service stopped before it was ready {said}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service was not ready within {seconds:.0f} s")
        time.sleep(0.3)
