"""Which address a request is counted under: X-Forwarded-For is believed only from proxies
the operator named, and only as far as the first hop they do not control."""

from __future__ import annotations

from typing import Any

from loyalty.access.addresses import client_address


def scope(peer: str, forwarded: str | None = None) -> Any:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"client": (peer, 1234), "headers": headers}


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address(scope("203.0.113.9", "198.51.100.1"), ()) == "203.0.113.9"


def test_a_trusted_proxy_passes_on_the_nearest_untrusted_hop() -> None:
    request = scope("10.0.0.5", "198.51.100.1, 203.0.113.7, 10.0.0.4")
    assert client_address(request, ("10.0.0.0/8",)) == "203.0.113.7"


def test_a_client_cannot_spoof_its_address_through_the_header() -> None:
    # The client wrote "1.2.3.4" itself; the proxy appended the address it really saw.
    request = scope("10.0.0.5", "1.2.3.4, 203.0.113.7")
    assert client_address(request, ("10.0.0.5",)) == "203.0.113.7"
    # A peer that is not a trusted proxy is taken at its word, header ignored.
    assert client_address(scope("203.0.113.7", "1.2.3.4"), ("10.0.0.5",)) == "203.0.113.7"


def test_garbage_in_the_header_falls_back_to_the_peer() -> None:
    assert client_address(scope("10.0.0.5", "not-an-ip"), ("10.0.0.5",)) == "10.0.0.5"
