"""The import pages over HTTP: admins only, CSRF, files that cannot be imported refused on the
form (400, nothing written), an upload followed to its end by the polled progress partial, and
the refused rows downloaded as row, field, reason."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from console.imports import UPLOAD_LIMIT, ImportState
from loyalty.core.settings import Settings
from tests.console.seed import seed
from tests.console.test_console_http import sign_in

HEADER = "external_id,email,phone,name,name_kana,birth_date,postal_code,joined_at\n"
GOOD = (HEADER
        + "EXT-1,kaori.ito@example.jp,,伊藤 香織,イトウ カオリ,,,2024-04-01T10:00:00+09:00\n"
        + "EXT-2,not-an-email,,高橋 健,タカハシ ケン,,,2024-05-01T10:00:00+09:00\n"
        + "EXT-3,mai.kato@example.jp,,加藤 舞,カトウ マイ,,,2024-06-01T10:00:00+09:00\n")


@pytest.fixture
async def seeded(settings: Settings) -> None:
    assert settings.database_url
    await seed(settings.database_url)


async def _members(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        count: int = await conn.fetchval("select count(*) from members")
        return count
    finally:
        await conn.close()


def _uploads(settings: Settings) -> list[Path]:
    folder = settings.data_path / "console-imports"
    return sorted(folder.rglob("*")) if folder.exists() else []


async def _upload(client: httpx.AsyncClient, token: str, content: bytes, *,
                  kind: str = "members", name: str = "members.csv") -> httpx.Response:
    return await client.post("/console/import", data={"csrf_token": token, "kind": kind},
                             files={"file": (name, content, "text/csv")})


@pytest.mark.usefixtures("seeded")
async def test_an_admin_sees_the_form_and_other_roles_are_refused(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    await sign_in(client, "admin")
    page = await client.get("/console/import")
    assert page.status_code == 200
    assert '<a href="/console/import" aria-current="page">' in page.text
    assert 'enctype="multipart/form-data"' in page.text
    assert '<label for="file">' in page.text
    for role in ("analyst", "marketer", "support"):
        client.cookies.clear()
        token = await sign_in(client, role)
        assert "/console/import" not in (await client.get("/console")).text
        assert (await client.get("/console/import")).status_code == 403
        refused = await _upload(client, token, GOOD.encode())
        assert refused.status_code == 403
    assert await _members(settings) == 3
    assert _uploads(settings) == []


@pytest.mark.usefixtures("seeded")
async def test_an_upload_without_the_token_is_refused(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    await sign_in(client, "admin")
    refused = await _upload(client, "x" * 43, GOOD.encode())
    assert refused.status_code == 403
    assert await _members(settings) == 3
    assert _uploads(settings) == []


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("content", "kind", "message"), [
    (b"", "members", "members.csv is empty: it needs a header"),
    (b"id,name\n1,x\n", "members", "unknown column &#39;id&#39;; the columns are external_id"),
    (HEADER.encode(), "purchases", "unknown column &#39;external_id&#39;"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "members", "is not UTF-8"),
    (b'external_id,"name,joined_at\n', "members", "unknown column &#39;name,joined_at&#39;"),
])
async def test_a_file_that_cannot_be_imported_is_the_form_again_saying_what_to_fix(
    client: httpx.AsyncClient, settings: Settings, content: bytes, kind: str, message: str,
) -> None:
    token = await sign_in(client, "admin")
    answer = await _upload(client, token, content, kind=kind)
    assert answer.status_code == 400, answer.text
    assert message in answer.text, re.findall(r'(?s)id="file-error".*?</p>', answer.text)
    assert "このファイルは取り込めません" in answer.text
    assert 'aria-invalid="true"' in answer.text
    assert await _members(settings) == 3
    assert _uploads(settings) == []


@pytest.mark.usefixtures("seeded")
async def test_no_file_or_no_kind_is_the_form_again(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    token = await sign_in(client, "admin")
    no_file = await client.post("/console/import", data={"csrf_token": token, "kind": "members"},
                                files={"file": ("", b"", "application/octet-stream")})
    assert no_file.status_code == 400
    assert "アップロードする CSV ファイルを選んでください" in no_file.text
    no_kind = await _upload(client, token, GOOD.encode(), kind="coupons")
    assert no_kind.status_code == 400
    assert "会員か購買かを選んで" in no_kind.text
    assert await _members(settings) == 3


@pytest.mark.usefixtures("seeded")
async def test_a_file_over_the_limit_is_refused_with_what_to_do(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    token = await sign_in(client, "admin")
    answer = await _upload(client, token, HEADER.encode() + b"x" * UPLOAD_LIMIT)
    assert answer.status_code == 413
    assert "20 MB を超えています" in answer.text
    assert "loyalty import" in answer.text
    assert await _members(settings) == 3


@pytest.mark.usefixtures("seeded")
async def test_an_upload_is_imported_in_the_background_and_its_refusals_downloaded(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    token = await sign_in(client, "admin")
    started = await _upload(client, token, GOOD.encode(), name="会員.csv")
    assert started.status_code == 303, started.text
    found = re.fullmatch(r"/console/import/([0-9a-f]{32})", started.headers["location"])
    assert found
    import_id = found.group(1)
    page = await client.get(started.headers["location"])
    assert page.status_code == 200
    assert "会員.csv の取り込み" in page.text
    for _ in range(200):
        partial = await client.get(f"/console/import/{import_id}/progress",
                                   headers={"HX-Request": "true"})
        assert partial.status_code == 200
        assert "<html" not in partial.text
        if 'data-state="running"' in partial.text:
            assert f'hx-get="/console/import/{import_id}/progress"' in partial.text
        else:
            break
        await asyncio.sleep(0.05)
    assert 'data-state="done"' in partial.text, partial.text
    assert "hx-trigger" not in partial.text
    assert "完了: 3 行を読み、2 行を取り込み、0 行は取り込み済み、1 行は取り込めませんでした。" \
        in partial.text
    assert await _members(settings) == 5
    rejects = await client.get(f"/console/import/{import_id}/rejects.csv")
    assert rejects.status_code == 200
    assert rejects.headers["content-type"].startswith("text/csv")
    assert "attachment" in rejects.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(rejects.text)))
    assert rows[0] == ["row", "field", "reason"]
    assert [row[:2] for row in rows[1:]] == [["3", "email"]]
    # The upload and the report with the rows' contents are gone; the rejections stay.
    assert [path.name for path in _uploads(settings) if path.is_file()] == ["rejects.csv"]
    conn = await asyncpg.connect(settings.database_url)
    try:
        audited = await conn.fetchval(
            "select count(*) from audit_log where action = 'import.start'")
    finally:
        await conn.close()
    assert audited == 1
    # Analysts may not read it.
    client.cookies.clear()
    await sign_in(client, "analyst")
    for path in (f"/console/import/{import_id}", f"/console/import/{import_id}/progress",
                 f"/console/import/{import_id}/rejects.csv"):
        assert (await client.get(path)).status_code == 403


@pytest.mark.usefixtures("seeded")
async def test_an_unknown_import_is_a_404_saying_to_start_again(
    client: httpx.AsyncClient,
) -> None:
    await sign_in(client, "admin")
    for path in ("/console/import/" + "0" * 32, "/console/import/nope/progress",
                 "/console/import/" + "0" * 32 + "/rejects.csv"):
        answer = await client.get(path)
        assert answer.status_code == 404, path
        assert "このアドレスの取り込みは見つかりません" in answer.text



@pytest.mark.usefixtures("seeded")
async def test_an_import_whose_process_stopped_is_shown_stopped_not_polled_forever(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    assert settings.redis_url
    import_id = "f" * 32
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    state = ImportState(import_id=import_id, kind="members", filename="members.csv",
                        started_at=long_ago, updated_at=long_ago, phase="writing", done=5,
                        total=10)
    redis = aioredis.from_url(settings.redis_url)
    try:
        await redis.set(f"console:import:{import_id}", msgspec.json.encode(state), ex=60)
    finally:
        await redis.aclose()
    await sign_in(client, "admin")
    partial = await client.get(f"/console/import/{import_id}/progress")
    assert 'data-state="failed"' in partial.text
    assert "hx-trigger" not in partial.text
    assert "the process running it stopped before it finished" in partial.text
    assert "取り込みが止まりました" in partial.text
