"""Fixtures of the API tests; what they build lives in tests/factories.py."""

from __future__ import annotations

import httpx
import pytest

from loyalty.core.settings import Settings
from tests.factories import Actors, World, make_world


@pytest.fixture
def actors(client: httpx.AsyncClient, settings: Settings) -> Actors:
    return Actors(client, settings)


@pytest.fixture
async def world(client: httpx.AsyncClient, actors: Actors) -> World:
    """The populated world the authorization matrix asks about (tests/factories.py)."""
    return await make_world(client, actors)
