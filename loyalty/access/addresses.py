"""Who is on the other end: the client's address from an ASGI connection's scope, believing a
forwarded-for header only from the proxies the operator trusts (LOYALTY_TRUSTED_PROXIES). The
API's rate limits and both sign-in forms (the API's and the console's) key on it."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any


@functools.lru_cache(maxsize=64)
def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(entry, strict=False)


def _is_trusted(address: str, trusted: Iterable[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in _network(entry) for entry in trusted)


def client_address(scope: Mapping[str, Any], trusted_proxies: Iterable[str]) -> str:
    """The peer address or, behind trusted proxies, the nearest hop in X-Forwarded-For that
    is not one of them. Hops a client wrote itself sit left of that and are never believed."""
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if not trusted_proxies or not _is_trusted(peer, trusted_proxies):
        return peer
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            hops = [hop.strip() for hop in value.decode("latin-1").split(",") if hop.strip()]
            for hop in reversed(hops):
                if not _is_trusted(hop, trusted_proxies):
                    try:
                        return str(ipaddress.ip_address(hop))
                    except ValueError:
                        return peer
    return peer
