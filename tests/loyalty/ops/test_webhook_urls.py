"""Endpoint URLs reach only the public internet: https, every resolved address global, checked
when the endpoint is saved and again for each connection, which goes to the address checked."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import uuid
from typing import Any

import pytest

from loyalty.ops.delivery import Claimed, delivery_client, send
from loyalty.ops.webhooks import (
    UnsafeUrl,
    address_refusal,
    check_endpoint_url,
    new_secret,
    resolve_checked,
    secret_key,
)
from tests.loyalty.ops.receiver import receiving, verify

REFUSED_BY_DEFAULT = [
    "https://127.0.0.1/hook", "https://10.0.0.1/hook", "https://169.254.169.254/latest",
    "https://[::1]/hook", "https://localhost/hook", "https://192.168.1.10/hook",
    "https://172.16.0.1/hook", "https://[fd00:ec2::254]/", "https://[::ffff:127.0.0.1]/hook",
    "https://0.0.0.0/hook", "https://100.64.0.1/hook", "https://[fe80::1]/hook",
]


@pytest.mark.parametrize("url", REFUSED_BY_DEFAULT)
async def test_non_public_addresses_are_refused_by_default(url: str) -> None:
    with pytest.raises(UnsafeUrl) as refused:
        await check_endpoint_url(url, allow_private=False)
    assert refused.value.field == "url"
    assert "public" in refused.value.detail or "metadata" in refused.value.detail


async def test_a_public_https_url_is_accepted() -> None:
    await check_endpoint_url("https://93.184.216.34:8443/hooks?x=1", allow_private=False)


@pytest.mark.parametrize(("url", "says"), [
    ("http://93.184.216.34/hook", "https"),
    ("ftp://93.184.216.34/hook", "https"),
    ("https://user:pw@93.184.216.34/hook", "password"),
    ("https://93.184.216.34/hook#part", "fragment"),
    ("https:///hook", "no host"),
    ("https://no-such-host.invalid/hook", "could not be resolved"),
])
async def test_bad_urls_are_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(UnsafeUrl) as refused:
        await check_endpoint_url(url, allow_private=False)
    assert says in refused.value.detail


async def test_allowing_private_addresses_still_refuses_the_metadata_service() -> None:
    await check_endpoint_url("http://127.0.0.1:9/hook", allow_private=True)
    await check_endpoint_url("https://10.0.0.1/hook", allow_private=True)
    for url in ("http://169.254.169.254/latest", "https://[fd00:ec2::254]/"):
        with pytest.raises(UnsafeUrl, match="metadata"):
            await check_endpoint_url(url, allow_private=True)


def test_ipv4_mapped_addresses_are_judged_as_their_ipv4_address() -> None:
    assert address_refusal(ipaddress.ip_address("::ffff:10.0.0.1"), allow_private=False)
    assert address_refusal(ipaddress.ip_address("::ffff:8.8.8.8"), allow_private=False) is None


def _resolving(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """The event loop's resolver answering ``answers`` (a name server under the test's
    control); the names it was asked."""
    asked: list[str] = []
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            asked.append(host)
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (a, port)) for a in answers[host]]
        return await real(host, port, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return asked


async def test_a_name_with_one_private_address_among_public_ones_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _resolving(monkeypatch, {"mixed.example": ["93.184.216.34", "10.0.0.1"]})
    with pytest.raises(UnsafeUrl, match=r"10\.0\.0\.1"):
        await resolve_checked("mixed.example", 443, allow_private=False)


async def test_a_delivery_connects_to_the_address_it_checked_keeping_the_host_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with receiving() as receiver:
        asked = _resolving(monkeypatch, {"hooks.example": ["127.0.0.1"]})
        secret = new_secret()
        claimed = Claimed(delivery_id=uuid.uuid4(), endpoint_id=uuid.uuid4(),
                          event_id=uuid.uuid4(), url=f"http://hooks.example:{receiver.port}/h",
                          secrets=(secret,), body=b'{"x":1}')
        client = delivery_client(allow_private=True)
        try:
            outcome = await send(client, claimed, allow_private=True)
        finally:
            await client.aclose()
        assert outcome.status_code == 200, outcome
        [request] = receiver.received
        assert request.headers["host"] == f"hooks.example:{receiver.port}"
        assert verify(secret, request)
        assert asked == ["hooks.example"]  # resolved once, by the check


async def test_a_name_rebound_to_a_private_address_is_refused_when_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with receiving() as receiver:
        _resolving(monkeypatch, {"rebound.example": ["127.0.0.1"]})
        claimed = Claimed(delivery_id=uuid.uuid4(), endpoint_id=uuid.uuid4(),
                          event_id=uuid.uuid4(), url=f"https://rebound.example:{receiver.port}/",
                          secrets=(new_secret(),), body=b"{}")
        client = delivery_client(allow_private=False)
        try:
            outcome = await send(client, claimed, allow_private=False)
        finally:
            await client.aclose()
        assert outcome.status_code is None
        assert outcome.error is not None
        assert outcome.error.startswith("refused:")
        assert receiver.received == []


def test_secrets_are_standard_webhooks_secrets() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert 24 <= len(secret_key(secret)) <= 64
    assert new_secret() != secret
