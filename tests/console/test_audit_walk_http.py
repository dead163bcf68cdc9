"""Every console page that reads a member's personal data or history leaves exactly one audit
row per request (one per member, where a page sets two side by side); a table decides each GET
route of the console, so a page added without a decision fails here (the API's routes:
tests/api/test_audit_api.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from litestar import Litestar

from loyalty.core.settings import Settings
from tests.console.promotions_seed import Promotions, seed_promotions
from tests.console.seed import seed
from tests.console.test_console_http import sign_in
from tests.factories import query


@dataclass(frozen=True)
class Scene:
    members: list[str]
    promotions: Promotions


@dataclass(frozen=True)
class Read:
    role: str
    action: str
    path: Callable[[Scene], str]
    members: int = 1  # rows: one per member whose data the page shows side by side


PERSONAL_PAGES: dict[str, Read] = {
    "/console/members": Read("support", "members.search", lambda _: "/console/members?q=a"),
    "/console/members/{member_id:uuid}": Read(
        "support", "members.read", lambda s: f"/console/members/{s.members[0]}"),
    "/console/members/{member_id:uuid}/history": Read(
        "support", "members.read", lambda s: f"/console/members/{s.members[0]}/history"),
    "/console/members/{member_id:uuid}/status": Read(
        "support", "members.read", lambda s: f"/console/members/{s.members[0]}/status"),
    "/console/members/{member_id:uuid}/erasure": Read(
        "support", "members.read", lambda s: f"/console/members/{s.members[0]}/erasure"),
    "/console/members/{member_id:uuid}/merge/{other_id:uuid}": Read(
        "support", "members.read",
        lambda s: f"/console/members/{s.members[0]}/merge/{s.members[1]}", members=2),
    "/console/rfm/{segment:str}": Read("marketer", "members.rfm_segment",
                                       lambda _: "/console/rfm/champions"),
    "/console/events/{event_id:uuid}": Read(
        "marketer", "events.guests", lambda s: f"/console/events/{s.promotions.event_id}"),
    "/console/segments/{segment_id:uuid}": Read(
        "marketer", "segments.preview",
        lambda s: f"/console/segments/{s.promotions.segment_id}"),
    "/console/segments/new": Read("marketer", "segments.preview",
                                  lambda _: "/console/segments/new"),
}

NOT_PERSONAL: dict[str, str] = {
    "/console": "the start page", "/console/sign-in": "the sign-in form",
    "/console/dashboard": "aggregates", "/console/rules": "configuration",
    "/console/rules/edit": "configuration", "/console/rules/diff": "configuration",
    "/console/rules/backtest": "a form with the rules in force",
    "/console/rules/backtests/{backtest_id:uuid}": "aggregates",
    "/console/rules/backtests/{backtest_id:uuid}/progress": "aggregates",
    "/console/tiers": "configuration", "/console/tiers/edit": "configuration",
    "/console/coupons": "configuration", "/console/coupons/new": "configuration",
    "/console/coupons/{template_id:uuid}": "a template and its batches",
    "/console/coupons/{template_id:uuid}/batches/{batch_id:uuid}/codes.csv":
        "coupon codes, no member (their generation is audited)",
    "/console/coupons/{template_id:uuid}/issue": "a segment's count before issuing",
    "/console/events": "events with seat counts", "/console/events/new": "a form",
    "/console/segments": "definitions", "/console/campaigns": "configuration",
    "/console/campaigns/new": "a form", "/console/campaigns/{campaign_id:uuid}": "configuration",
    "/console/campaigns/{campaign_id:uuid}/launch": "counts before a launch",
    "/console/campaigns/{campaign_id:uuid}/results": "aggregates",
    "/console/jobs": "operations", "/console/jobs/{name:str}": "operations",
    "/console/jobs/{name:str}/runs": "operations", "/console/jobs/{name:str}/run": "a form",
    "/console/import": "a form", "/console/import/{import_id:str}": "an import's counts",
    "/console/import/{import_id:str}/progress": "an import's counts",
    "/console/import/{import_id:str}/rejects.csv":
        "the refused lines of a file the admin uploaded (its start is audited)",
    "/console/webhooks": "configuration", "/console/webhooks/{endpoint_id:uuid}": "configuration",
    "/console/staff": "staff accounts, not members (changes are audited)",
    "/console/staff/{staff_id:uuid}": "a staff account",
    "/console/audit": "the trail itself",
    "/console/static/{file_path:path}": "files",
}


def _console_gets(app: Litestar) -> set[str]:
    return {route.path for route in app.routes
            if route.path.startswith("/console") and "GET" in getattr(route, "methods", ())}


def test_every_console_page_is_decided(app: Litestar) -> None:
    pages = _console_gets(app)
    assert PERSONAL_PAGES.keys() & NOT_PERSONAL.keys() == set()
    assert pages - PERSONAL_PAGES.keys() - NOT_PERSONAL.keys() == set(), \
        "console pages with no decision whether they read personal data"
    assert (PERSONAL_PAGES.keys() | NOT_PERSONAL.keys()) - pages == set(), \
        "decisions for pages that no longer exist"


@pytest.fixture
async def scene(settings: Settings) -> Scene:
    assert settings.database_url
    members = await seed(settings.database_url)
    promotions = await seed_promotions(settings.database_url)
    return Scene([str(m.member_id) for m in members], promotions)


async def _actions(settings: Settings) -> list[Any]:
    assert settings.database_url
    return [r["action"] for r in await query(
        settings.database_url, "select action from audit_log order by recorded_at, audit_id")]


async def test_every_personal_page_leaves_exactly_one_audit_row(
    client: httpx.AsyncClient, settings: Settings, scene: Scene, subtests: pytest.Subtests,
) -> None:
    signed_in = None
    for route, read in sorted(PERSONAL_PAGES.items()):
        with subtests.test(msg=route):
            if signed_in != read.role:
                await sign_in(client, read.role)
                signed_in = read.role
            before = await _actions(settings)
            response = await client.get(read.path(scene))
            assert response.status_code == 200, response.text
            after = await _actions(settings)
            assert after[:len(before)] == before
            assert after[len(before):] == [read.action] * read.members
