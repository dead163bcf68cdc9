"""The console over HTTP, without a browser: sign-in, the session's ends, CSRF, roles, the
members search and the catalogues."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import get_args
from uuid import UUID

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from babel.messages.pofile import read_po
from litestar import Litestar

from console import dashboard, roles
from console.i18n import LANGUAGES, LOCALE, TEMPLATES
from loyalty.access.revocation import PROMISE_SECONDS
from loyalty.access.staff import deactivate_staff, set_staff_role
from loyalty.core.normalize import normalize_phone
from loyalty.core.settings import Settings
from schemas.members import MemberStatus
from tests.conftest import AppWith
from tests.console.seed import MEMBERS, PASSWORD, seed, staff_email

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
async def seeded(settings: Settings) -> None:
    assert settings.database_url
    await seed(settings.database_url)


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, role: str) -> str:
    """Signs ``client`` in as the seeded staff member of ``role``; the session's CSRF token."""
    form = await client.get("/console/sign-in")
    answer = await client.post("/console/sign-in", data={
        "email": staff_email(role), "password": PASSWORD, "csrf_token": csrf_of(form)})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console"
    return csrf_of(await client.get("/console"))


@pytest.mark.usefixtures("seeded")
async def test_sign_in_sets_a_strict_http_only_cookie_and_shows_who(
    client: httpx.AsyncClient,
) -> None:
    form = await client.get("/console/sign-in")
    answer = await client.post("/console/sign-in", data={
        "email": staff_email("support"), "password": PASSWORD, "csrf_token": csrf_of(form)})
    cookie = answer.headers["set-cookie"]
    assert "loyalty_console=" in cookie
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Secure" not in cookie  # served over plain HTTP here
    home = await client.get("/console")
    assert home.status_code == 200
    assert staff_email("support") in home.text
    assert "サポート窓口（support@staff.example）でサインイン中" in home.text
    assert "サポート" in home.text  # the role, in the default language


@pytest.mark.usefixtures("seeded")
async def test_a_wrong_password_is_refused_on_the_form(client: httpx.AsyncClient) -> None:
    form = await client.get("/console/sign-in")
    answer = await client.post("/console/sign-in", data={
        "email": staff_email("support"), "password": "wrong", "csrf_token": csrf_of(form)})
    assert answer.status_code == 401
    assert "メールアドレスまたはパスワードが違います" in answer.text
    assert (await client.get("/console")).status_code == 303


async def test_sign_in_is_limited_per_client_address_as_the_apis_is(app_with: AppWith) -> None:
    """The console's form and the API's log-in count attempts from one address together."""
    async with app_with(login_rate_limit_per_minute=4) as (client, _):
        form = await client.get("/console/sign-in")
        statuses = []
        for i in range(3):
            answer = await client.post("/console/sign-in", data={
                "email": f"nobody{i}@staff.example", "password": "x", "csrf_token": csrf_of(form)})
            statuses.append(answer.status_code)
        api = await client.post("/v1/auth/staff/login",
                                json={"email": "nobody@staff.example", "password": "x"})
        limited = await client.post("/console/sign-in", data={
            "email": "nobody9@staff.example", "password": "x", "csrf_token": csrf_of(form)})
        assert statuses == [401, 401, 401]
        assert api.status_code == 401
        assert limited.status_code == 429
        assert "このネットワークからのサインインの試行が多すぎます" in limited.text


@pytest.mark.usefixtures("seeded")
async def test_posts_without_the_csrf_token_are_refused_with_a_page(
    client: httpx.AsyncClient,
) -> None:
    form = await client.get("/console/sign-in")
    refused = await client.post("/console/sign-in", data={
        "email": staff_email("support"), "password": PASSWORD})
    assert refused.status_code == 403
    assert "text/html" in refused.headers["content-type"]
    assert "セキュリティトークン" in refused.text
    wrong = await client.post("/console/sign-in", data={
        "email": staff_email("support"), "password": PASSWORD, "csrf_token": "x" + csrf_of(form)})
    assert wrong.status_code == 403
    token = await sign_in(client, "support")
    assert (await client.post("/console/sign-out", data={})).status_code == 403
    # Still signed in: the refused sign-out did nothing.
    assert (await client.get("/console")).status_code == 200
    assert (await client.post("/console/sign-out", data={"csrf_token": token})).status_code == 303


@pytest.mark.usefixtures("seeded")
async def test_signing_out_ends_the_session(client: httpx.AsyncClient) -> None:
    token = await sign_in(client, "support")
    cookie = client.cookies.get("loyalty_console")
    await client.post("/console/sign-out", data={"csrf_token": token})
    assert (await client.get("/console")).status_code == 303
    # The old cookie, kept by an attacker, opens nothing either.
    client.cookies.set("loyalty_console", cookie or "", path="/console")
    assert (await client.get("/console/members")).status_code == 303


@pytest.mark.usefixtures("seeded")
async def test_deactivation_or_a_new_role_ends_the_session_at_once(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    assert settings.database_url
    await sign_in(client, "support")
    conn = await asyncpg.connect(settings.database_url)
    try:
        await set_staff_role(conn, staff_email("support"), "analyst")
    finally:
        await conn.close()
    await _refused_within_the_promise(client)
    await sign_in(client, "marketer")
    conn = await asyncpg.connect(settings.database_url)
    try:
        await deactivate_staff(conn, staff_email("marketer"))
    finally:
        await conn.close()
    await _refused_within_the_promise(client)


async def _refused_within_the_promise(client: httpx.AsyncClient) -> None:
    """The session ends as the API's tokens do: as soon as this process hears of the change
    (PostgreSQL's notification), and within PROMISE_SECONDS whatever happens to the listener
    (docs/decisions/0011). The notification arrives a moment after the commit, so the first
    request may still pass."""
    started = time.monotonic()
    while True:
        answer = await client.get("/console")
        if answer.status_code == 303:
            break
        assert time.monotonic() - started <= PROMISE_SECONDS, "the session outlived the promise"
        await asyncio.sleep(0.02)
    assert answer.headers["location"] == "/console/sign-in?reason=ended"


async def test_idle_and_absolute_timeouts_end_the_session(
    app_with: AppWith, fresh_database: str, redis_url: str,
) -> None:
    await seed(fresh_database)
    redis = aioredis.from_url(redis_url)
    try:
        async with app_with(console_idle_timeout_seconds=60,
                            console_session_max_age_seconds=300) as (client, _):
            await sign_in(client, "support")
            [key] = await redis.keys("console:session:*")
            assert 0 < await redis.ttl(key) <= 60  # the idle clock, restarted by each request
            await redis.pexpire(key, 1)  # as if the minute had passed without a request
            await asyncio.sleep(0.05)
            idle = await client.get("/console")
            assert idle.headers["location"] == "/console/sign-in?reason=expired"

            await sign_in(client, "support")
            [key] = await redis.keys("console:session:*")
            stored = json.loads(await redis.get(key) or b"")
            stored["started_at"] -= 301  # signed in longer ago than the absolute timeout
            await redis.set(key, json.dumps(stored), keepttl=True)
            absolute = await client.get("/console")
            assert absolute.headers["location"] == "/console/sign-in?reason=expired"
            ended = await asyncpg.connect(fresh_database)
            try:
                assert await ended.fetchval(
                    "select count(*) from refresh_tokens where family_id = $1 and revoked_at"
                    " is null", UUID(stored["session_id"])) == 0
            finally:
                await ended.close()
    finally:
        await redis.aclose()


@pytest.mark.usefixtures("seeded")
async def test_a_full_width_phone_number_finds_the_member(client: httpx.AsyncClient) -> None:
    await sign_in(client, "support")
    for typed in ("０８０－２３４５－６７８９", "０８０２３４５６７８９"):
        found = await client.get("/console/members", params={"q": typed})
        assert found.status_code == 200
        assert "佐藤 花子" in found.text, typed
        assert "hanako.sato@example.jp" in found.text
        assert "山田 太郎" not in found.text


@pytest.mark.usefixtures("seeded")
async def test_htmx_gets_the_results_alone(client: httpx.AsyncClient) -> None:
    await sign_in(client, "support")
    part = await client.get("/console/members", params={"q": "ヤマダ"},
                            headers={"HX-Request": "true"})
    assert "山田 太郎" in part.text
    assert "<html" not in part.text


@pytest.mark.usefixtures("seeded")
async def test_a_marketer_finds_by_name_but_sees_no_contact_details(
    client: httpx.AsyncClient,
) -> None:
    await sign_in(client, "marketer")
    by_name = await client.get("/console/members", params={"q": "山田"})
    assert "山田 太郎" in by_name.text
    assert "@example.jp" not in by_name.text
    # Each seeded phone, as stored and as typed (a bare "090" could be part of a member
    # number, which a marketer does see).
    for *_, phone in MEMBERS:
        assert normalize_phone(phone) not in by_name.text
        assert phone not in by_name.text
    by_email = await client.get("/console/members", params={"q": "taro.yamada@example.jp"})
    assert "山田 太郎" not in by_email.text


@pytest.mark.usefixtures("seeded")
async def test_an_analyst_may_not_open_the_members_page(client: httpx.AsyncClient) -> None:
    await sign_in(client, "analyst")
    refused = await client.get("/console/members", params={"q": "山田"})
    assert refused.status_code == 403
    assert "山田" not in refused.text.replace('value="山田"', "")
    assert "@example.jp" not in refused.text
    home = await client.get("/console")
    assert 'href="/console/members"' not in home.text


@pytest.mark.usefixtures("seeded")
async def test_the_language_switch_keeps_the_choice(client: httpx.AsyncClient) -> None:
    token = await sign_in(client, "support")
    switched = await client.post("/console/language", data={
        "language": "en", "back": "/console/members", "csrf_token": token})
    assert switched.status_code == 303
    assert switched.headers["location"] == "/console/members"
    assert "Members found" in (await client.get("/console/members", params={"q": "ヤマダ"})).text
    away = await client.post("/console/language", data={
        "language": "ja", "back": "https://elsewhere.example/", "csrf_token": token})
    assert away.headers["location"] == "/console"
    assert "会員" in (await client.get("/console/members")).text


def test_templates_translate_only_literal_messages_with_underscore() -> None:
    """``_()`` marks its result safe HTML (Jinja's new-style gettext), so a value from the code
    or the data passed to it would be written unescaped: those go through ``word()``."""
    found = [f"{path.name}: {call}" for path in TEMPLATES.glob("*.html")
             for call in re.findall(r"\b_\((?!\s*[\"'])[^)]*\)", path.read_text())]
    assert found == []


async def test_a_word_from_the_data_is_escaped(app: Litestar) -> None:
    from console.i18n import environment

    template = environment("ja").from_string("{{ word(value) }}|{{ word('active') }}")
    assert template.render(value="<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;|有効"


def test_the_catalogues_are_well_formed() -> None:
    """Each message once, each with one msgstr (what msgfmt -c checks; Babel would read past a
    stray line, and a merge of two pages' additions can leave one)."""
    for language in LANGUAGES:
        lines = (LOCALE / language / "LC_MESSAGES" / "console.po").read_text().splitlines()
        keywords = [line.split(" ", 1)[0] for line in lines
                    if line.startswith(("msgid ", "msgstr "))]
        assert keywords == ["msgid", "msgstr"] * (len(keywords) // 2), language
        ids = [line for line in lines if line.startswith("msgid ")]
        assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]


def test_every_message_has_a_japanese_translation() -> None:
    """Every message the templates and the navigation say is in both catalogues, and Japanese
    has a translation for each."""
    said = set(re.findall(r'_\(\s*"([^"]+)"', "".join(
        path.read_text() for path in TEMPLATES.glob("*.html"))))
    said |= {page.label for page in roles.PAGES} | set(roles.STAFF_ROLES)
    said |= {page.description for page in roles.PAGES}
    said |= set(get_args(MemberStatus)) | set(dashboard.CARD_LABELS)
    for language in LANGUAGES:
        with (LOCALE / language / "LC_MESSAGES" / "console.po").open("rb") as po:
            catalogue = read_po(po)
        assert sorted(said - {m.id for m in catalogue if m.id}) == [], language
        if language == "ja":
            assert [m.id for m in catalogue if m.id and not m.string] == []


# The console's routes that answer without a session; every other page sends the browser to
# sign in, and every POST without the CSRF token is refused.
PUBLIC = {("GET", "/console/sign-in"), ("GET", "/console/static/{file_path:path}")}
# A path parameter of each type, filled with a value of that type (any will do: the session is
# checked before anything is looked up).
PARAMETER = re.compile(r"\{\w+:(\w+)\}")
EXAMPLES = {"uuid": "00000000-0000-7000-8000-000000000000", "str": "x", "int": "1"}


async def test_every_console_page_needs_a_session_and_every_post_a_token(
    app: Litestar, client: httpx.AsyncClient,
) -> None:
    routes = {(method, route.path) for route in app.routes
              for method in getattr(route, "methods", ())
              if route.path.startswith("/console") and method not in {"OPTIONS", "HEAD"}}
    assert routes >= PUBLIC
    for method, template in sorted(routes - PUBLIC):
        path = PARAMETER.sub(lambda found: EXAMPLES[found.group(1)], template)
        answer = await client.request(method, path, data={} if method == "POST" else None)
        if method == "GET":
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/console/sign-in"), path
        else:
            assert answer.status_code in {303, 403}, (path, answer.status_code)
