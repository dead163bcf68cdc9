"""The Events pages over HTTP: the list with capacity and seats, the create form, an event's
page with invitations, seats and check-ins; who sees members' names, roles, CSRF, bad input."""

from __future__ import annotations

import re
from uuid import UUID

import asyncpg
import httpx
import pytest

from console import events
from loyalty.core.settings import Settings
from tests.console.promotions_seed import (
    EVENT,
    LATER_EVENT,
    SEGMENT,
    Promotions,
    count_rows,
)
from tests.console.seed import MEMBERS
from tests.console.test_console_http import sign_in

EVENT_FORM = {"name": "夏祭り", "place": "渋谷店 屋上", "starts_at": "2027-07-20T18:00",
              "ends_at": "2027-07-20T21:00", "capacity": "40", "points": "200",
              "store_code": "SHIBUYA", "invitation_only": "on"}




async def test_the_list_shows_capacity_seats_taken_and_check_ins(
    client: httpx.AsyncClient, promotions: Promotions,
) -> None:
    await sign_in(client, "marketer")
    page = await client.get("/console/events")
    assert page.status_code == 200
    row = re.search(rf"{EVENT}</a></td>(.*?)</tr>", page.text, re.S)
    assert row, page.text
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    assert cells[1].strip() == "渋谷店 2階 (SHIBUYA)"
    assert cells[2].strip() == "2 / 20"
    assert cells[3].strip() == "1"
    assert cells[4].strip() == "開催中"  # started half an hour ago
    assert LATER_EVENT in page.text
    # Latest start first.
    assert page.text.index(LATER_EVENT) < page.text.index(EVENT)
    assert 'href="/console/events/new"' in page.text


async def test_an_event_page_shows_counts_and_the_members_for_a_marketer_without_contacts(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
) -> None:
    await sign_in(client, "marketer")
    page = await client.get(f"/console/events/{promotions.event_id}")
    assert page.status_code == 200
    values = re.findall(r'<p class="value">(.*?)</p>', page.text)
    assert values == ["3", "2 / 20", "1"]
    for name, _, email, phone in MEMBERS:
        assert name in page.text
        assert email not in page.text
        assert phone not in page.text
    assert SEGMENT in page.text  # the invite form offers the saved segment
    assert await count_rows(
        settings, "select count(*) from audit_log where action = 'events.guests'"
        " and subject_id = $1", promotions.event_id) == 1


async def test_an_analyst_sees_counts_but_no_names_no_buttons_and_its_posts_are_refused(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
) -> None:
    token = await sign_in(client, "analyst")
    listing = await client.get("/console/events")
    assert listing.status_code == 200
    assert EVENT in listing.text
    assert "/console/events/new" not in listing.text
    page = await client.get(f"/console/events/{promotions.event_id}")
    assert page.status_code == 200
    assert re.findall(r'<p class="value">(.*?)</p>', page.text) == ["3", "2 / 20", "1"]
    for name, *_ in MEMBERS:
        assert name not in page.text
    assert "/invitations" not in page.text
    assert "あなたのロールでは上の件数だけが表示され" in page.text
    assert (await client.get("/console/events/new")).status_code == 403
    refused = [
        await client.post("/console/events", data={**EVENT_FORM, "csrf_token": token}),
        await client.post(f"/console/events/{promotions.later_event_id}/invitations",
                          data={"segment_id": str(promotions.segment_id), "csrf_token": token}),
    ]
    assert [r.status_code for r in refused] == [403, 403]
    assert await count_rows(settings, "select count(*) from events") == 2
    assert await count_rows(settings, "select count(*) from event_invitations") == 3


async def test_creating_an_event_saves_it_in_the_business_time_zone(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
) -> None:
    token = await sign_in(client, "marketer")
    answer = await client.post("/console/events", data={**EVENT_FORM, "csrf_token": token})
    assert answer.status_code == 303
    event_id = UUID(answer.headers["location"].rsplit("/", 1)[1])
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        row = await conn.fetchrow("select * from events where event_id = $1", event_id)
    finally:
        await conn.close()
    assert row is not None
    assert row["starts_at"].isoformat() == "2027-07-20T09:00:00+00:00"
    assert (row["capacity"], row["points"], row["invitation_only"]) == (40, 200, True)
    page = await client.get(answer.headers["location"])
    assert "夏祭り" in page.text
    assert "招待または予約している会員はまだいません" in page.text


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"name": " "}, "name", "名前を1〜100文字"),
    ({"capacity": "0"}, "capacity", "席数を1〜1000000"),
    ({"capacity": "たくさん"}, "capacity", "席数を1〜1000000"),
    ({"starts_at": ""}, "starts_at", "開始日時"),
    ({"ends_at": "2027-07-20T17:00"}, "ends_at", "開始より後の終了日時"),
    ({"store_code": "NOWHERE"}, "store_code", "この店舗コードの店舗はありません"),
    ({"points": "-5"}, "points", "ポイントを0〜1000000"),
])
async def test_bad_input_shows_the_form_again_with_the_message_and_saves_nothing(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
    change: dict[str, str], field: str, message: str,
) -> None:
    token = await sign_in(client, "marketer")
    answer = await client.post("/console/events",
                               data={**EVENT_FORM, **change, "csrf_token": token})
    assert answer.status_code == 400
    assert f'id="{field}-error"' in answer.text
    assert message in answer.text
    assert await count_rows(settings, "select count(*) from events") == 2


async def test_posts_without_the_csrf_token_change_nothing(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
) -> None:
    await sign_in(client, "marketer")
    answers = [
        await client.post("/console/events", data=EVENT_FORM),
        await client.post(f"/console/events/{promotions.later_event_id}/invitations",
                          data={"segment_id": str(promotions.segment_id)}),
    ]
    assert [a.status_code for a in answers] == [403, 403]
    assert await count_rows(settings, "select count(*) from events") == 2
    assert await count_rows(settings, "select count(*) from event_invitations") == 3


async def test_inviting_a_segment_invites_each_member_once(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
) -> None:
    token = await sign_in(client, "marketer")
    url = f"/console/events/{promotions.later_event_id}/invitations"
    form = {"segment_id": str(promotions.segment_id), "csrf_token": token}
    first = await client.post(url, data=form)
    assert first.status_code == 303
    shown = await client.get(first.headers["location"])
    assert "3人を新たに招待しました" in shown.text
    again = await client.post(url, data=form)
    assert (await client.get(again.headers["location"])).text.count("0人を新たに招待") == 1
    assert await count_rows(settings, "select count(*) from event_invitations where event_id = $1",
                        promotions.later_event_id) == 3


async def test_inviting_an_unknown_segment_is_a_400_and_invites_nobody(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
) -> None:
    token = await sign_in(client, "marketer")
    url = f"/console/events/{promotions.later_event_id}/invitations"
    for segment in ("nonsense", "00000000-0000-7000-8000-000000000009"):
        answer = await client.post(url, data={"segment_id": segment, "csrf_token": token})
        assert answer.status_code == 400
        assert 'id="segment-error"' in answer.text
    assert await count_rows(settings, "select count(*) from event_invitations where event_id = $1",
                        promotions.later_event_id) == 0


async def test_support_may_not_open_events(client: httpx.AsyncClient,
                                          promotions: Promotions) -> None:
    await sign_in(client, "support")
    assert (await client.get("/console/events")).status_code == 403
    assert (await client.get(f"/console/events/{promotions.event_id}")).status_code == 403


async def test_the_members_list_pages_by_cursor_for_htmx(
    client: httpx.AsyncClient, promotions: Promotions, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await sign_in(client, "marketer")
    monkeypatch.setattr(events, "PAGE_SIZE", 2)
    page = await client.get(f"/console/events/{promotions.event_id}")
    found = re.search(r'hx-get="(/console/events/[^"]+\?cursor=[^"]+)"', page.text)
    assert found, page.text
    rest = await client.get(found.group(1), headers={"HX-Request": "true"})
    assert rest.status_code == 200
    assert "<html" not in rest.text
    names = [name for name, *_ in MEMBERS]
    shown_first = [n for n in names if n in page.text]
    shown_rest = [n for n in names if n in rest.text]
    assert len(shown_first) == 2
    assert len(shown_rest) == 1
    assert set(shown_first) | set(shown_rest) == set(names)


async def test_every_mistake_on_the_form_is_shown_at_once(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
) -> None:
    token = await sign_in(client, "marketer")
    answer = await client.post("/console/events", data={
        "name": "夏祭り", "place": "", "starts_at": "", "ends_at": "", "capacity": "0",
        "points": "-1", "csrf_token": token})
    assert answer.status_code == 400
    for field in ("place", "starts_at", "ends_at", "capacity", "points"):
        assert f'id="{field}-error"' in answer.text
    assert 'id="name-error"' not in answer.text
    assert await count_rows(settings, "select count(*) from events") == 2
