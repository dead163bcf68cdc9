"""``loyalty import``: members and purchases from CSV on a real PostgreSQL, normalised like the
API's input, de-duplicated, idempotent by external ids, with a report of what was refused."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cli import main as cli
from loyalty.core.db import Connection, init_connection
from loyalty.core.errors import Conflict, InvalidInput
from loyalty.insights.dormancy import flag_dormant
from loyalty.insights.kpis import kpis, snapshot_kpis
from loyalty.members.profiles import register_member
from loyalty.ops.import_files import IMPORT_LOCK_KEY, Progress
from loyalty.ops.import_members import import_members
from loyalty.ops.import_purchases import import_purchases
from schemas.members import MemberRegistration
from tests.factories import TOKYO, query

NOW = dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.UTC)
MEMBERS_HEADER = "external_id,email,phone,name,name_kana,birth_date,postal_code,joined_at\n"
PURCHASES_HEADER = "member_external_id,store_code,receipt_id,occurred_at,total,returned_amount\n"


@pytest.fixture
async def conn(fresh_database: str) -> AsyncIterator[Connection]:
    connection = await asyncpg.connect(fresh_database)
    await init_connection(connection)
    yield connection
    await connection.close()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def report_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.reader(file))


async def counts(conn: Connection) -> dict[str, Any]:
    row = await conn.fetchrow(
        """
        select (select count(*) from members) as members,
               (select count(*) from point_balances) as balances,
               (select count(*) from purchases) as purchases,
               (select count(*) from stores) as stores,
               (select count(*) from terminals) as terminals,
               (select count(*) from point_entries) as entries,
               (select sum(version) from point_balances) as versions,
               (select sum(purchase_count) from point_balances) as purchase_count,
               (select array_agg((external_id, last_activity_at, status) order by external_id)
                  from members) as activity
        """)
    assert row is not None
    return dict(row)


async def import_two_members(conn: Connection, tmp_path: Path) -> None:
    source = write(tmp_path / "members.csv", MEMBERS_HEADER
                   + "A1,a1@example.com,,Aoi,,,,2020-04-01T10:00:00+09:00\n"
                   + "B2,b2@example.com,,Ben,,,,2021-04-01T10:00:00+09:00\n")
    summary = await import_members(conn, source, now=NOW)
    assert (summary.inserted, summary.rejected) == (2, 0)


# -- members ---------------------------------------------------------------------------------


async def test_members_are_imported_normalised_with_their_join_date(
    conn: Connection, tmp_path: Path
) -> None:
    source = write(tmp_path / "members.csv", MEMBERS_HEADER
                   + " K-001 ,Ｔａｒｏ＠Example.COM,090-1234-5678,山田　太郎,やまだ たろう,"
                     "1990-05-06,１００-０００１,2019-03-04T09:00:00+09:00\n"
                   + "K-002,,+81 80 1111 2222,ｻﾄｳ ﾊﾅｺ,ｻﾄｳ ﾊﾅｺ,,,2020-01-01T00:00:00Z\n")

    summary = await import_members(conn, source, now=NOW)

    assert (summary.read, summary.inserted, summary.present, summary.rejected) == (2, 2, 0, 0)
    # Joined years ago with nothing since: dormant from the start of business day
    # join + 180 + 1 (Tokyo), as the nightly job would have flagged them.
    history = await conn.fetch(
        """
        select m.external_id, c.changed_at, c.from_status, c.to_status, c.reason
          from member_status_changes c join members m using (member_id) order by 1
        """)
    assert [tuple(r) for r in history] == [
        ("K-001", dt.datetime(2019, 9, 1, tzinfo=TOKYO), "active", "dormant", "inactivity"),
        ("K-002", dt.datetime(2020, 6, 30, tzinfo=TOKYO), "active", "dormant", "inactivity"),
    ]
    rows = await conn.fetch(
        """
        select m.external_id, m.email, m.phone, m.name, m.name_kana, m.name_key, m.kana_key,
               m.birth_date, m.postal_code, m.joined_at, m.last_activity_at, m.status,
               m.password_hash, b.purchase_count
          from members m join point_balances b using (member_id) order by m.external_id
        """)
    assert [dict(r) for r in rows] == [
        {"external_id": "K-001", "email": "taro@example.com", "phone": "+819012345678",
         "name": "山田 太郎", "name_kana": "ヤマダ タロウ", "name_key": "山田太郎",
         "kana_key": "ヤマダタロウ", "birth_date": dt.date(1990, 5, 6), "postal_code": "100-0001",
         "joined_at": dt.datetime(2019, 3, 4, 0, 0, tzinfo=dt.UTC),
         "last_activity_at": dt.datetime(2019, 3, 4, 0, 0, tzinfo=dt.UTC), "status": "dormant",
         "password_hash": None, "purchase_count": 0},
        {"external_id": "K-002", "email": None, "phone": "+818011112222",
         "name": "サトウ ハナコ", "name_kana": "サトウ ハナコ", "name_key": "サトウハナコ",
         "kana_key": "サトウハナコ", "birth_date": None, "postal_code": None,
         "joined_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
         "last_activity_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC), "status": "dormant",
         "password_hash": None, "purchase_count": 0},
    ]
    numbers = await conn.fetchval(
        "select count(*) from members where member_number = with_check_digit(left("
        "member_number, length(member_number) - 1))")
    assert numbers == 2
    assert report_rows(tmp_path / "members.rejected.csv") == [
        ["line", "reason", "external_id", "email", "phone", "name", "name_kana", "birth_date",
         "postal_code", "joined_at"]]


async def test_duplicates_in_the_file_and_of_existing_members_are_rejected_with_reasons(
    conn: Connection, tmp_path: Path
) -> None:
    existing = await register_member(
        conn, MemberRegistration(password="long enough pw", name="Existing",
                                 email="taken@example.com", phone="080-9999-0000"),
        password_hash="x", region="JP")
    joined = "2020-01-01T00:00:00+09:00"
    source = write(tmp_path / "members.csv", MEMBERS_HEADER
                   + f"M1,one@example.com,090-1000-0001,One,,,,{joined}\n"      # 2: in
                   + f"M1,other@example.com,,One again,,,,{joined}\n"           # 3: same id
                   + f"M3,ONE@example.com,,Three,,,,{joined}\n"                 # 4: same e-mail
                   + f"M4,,09010000001,Four,,,,{joined}\n"                      # 5: same phone
                   + f"M5,Taken@example.com,,Five,,,,{joined}\n"                # 6: existing's
                   + f"M6,,+81 80 9999 0000,Six,,,,{joined}\n"                  # 7: existing's
                   + f"M7,not-an-email,,Seven,,,,{joined}\n"                     # 8
                   + f"M8,,,Eight,,,,{joined}\n"                                 # 9: no contact
                   + "M9,nine@example.com,,Nine,,,,2020-01-01T00:00:00\n"       # 10: no offset
                   + "M10,ten@example.com,,Ten,,,,2027-01-01T00:00:00+09:00\n"  # 11: future
                   + f"M11,eleven@example.com,,,,,,{joined}\n"                   # 12: no name
                   + f"M12,twelve@example.com,,Twelve,Twelve,,,{joined}\n"       # 13: not kana
                   + f"M13,x@example.com,,\"Thirteen, \"\"Jr\"\"\",,,,{joined},extra\n"  # 14
                   + "\n"
                   + f"M15,fifteen@example.com,,Fifteen,,1990-02-30,,{joined}\n")  # 16

    summary = await import_members(conn, source, now=NOW)

    assert (summary.read, summary.inserted, summary.present, summary.rejected) == (14, 1, 0, 13)
    assert report_rows(tmp_path / "members.rejected.csv")[1:] == [
        ["3", "external_id M1 is also on line 2", "M1", "other@example.com", "", "One again",
         "", "", "", joined],
        ["4", "email is also on line 2", "M3", "ONE@example.com", "", "Three", "", "", "",
         joined],
        ["5", "phone is also on line 2", "M4", "", "09010000001", "Four", "", "", "", joined],
        ["6", f"email belongs to member {existing.member_number}", "M5", "Taken@example.com",
         "", "Five", "", "", "", joined],
        ["7", f"phone belongs to member {existing.member_number}", "M6", "",
         "+81 80 9999 0000", "Six", "", "", "", joined],
        ["8", "email: not an e-mail address", "M7", "not-an-email", "", "Seven", "", "", "",
         joined],
        ["9", "an email or a phone is required", "M8", "", "", "Eight", "", "", "",
         joined],
        ["10", "joined_at: give the time with its UTC offset, such as 2026-11-23T12:00:00+09:00",
         "M9",
         "nine@example.com", "", "Nine", "", "", "", "2020-01-01T00:00:00"],
        ["11", "joined_at: is in the future", "M10", "ten@example.com", "", "Ten", "", "", "",
         "2027-01-01T00:00:00+09:00"],
        ["12", "name: required", "M11", "eleven@example.com", "", "", "", "", "", joined],
        ["13", "name_kana: kana must be written in hiragana or katakana", "M12",
         "twelve@example.com", "", "Twelve", "Twelve", "", "", joined],
        ["14", "9 fields where the header has 8", "M13", "x@example.com", "",
         'Thirteen, "Jr"', "", "", "", joined, "extra"],
        ["16", "birth_date: '1990-02-30' is not a date such as 2026-11-23", "M15",
         "fifteen@example.com", "", "Fifteen", "", "1990-02-30", "", joined],
    ]
    assert await conn.fetchval("select count(*) from members") == 2


async def test_importing_the_same_members_twice_changes_nothing(
    conn: Connection, tmp_path: Path
) -> None:
    joined = "2020-01-01T00:00:00+09:00"
    source = write(tmp_path / "members.csv", MEMBERS_HEADER
                   + f"M1,one@example.com,,One,,,,{joined}\n"
                   + f"M2,two@example.com,,Two,,,,{joined}\n"
                   + f"M3,one@example.com,,Three,,,,{joined}\n"
                   + f"M4,bad,,Four,,,,{joined}\n")
    first = await import_members(conn, source, now=NOW)
    before = await counts(conn)
    report = report_rows(tmp_path / "members.rejected.csv")

    second = await import_members(conn, source, now=NOW)

    assert (first.inserted, first.present, first.rejected) == (2, 0, 2)
    assert (second.inserted, second.present, second.rejected) == (0, 2, 2)
    assert await counts(conn) == before
    assert before["members"] == 2
    assert report_rows(tmp_path / "members.rejected.csv") == report


async def test_a_bad_header_stops_the_import_before_anything_is_written(
    conn: Connection, tmp_path: Path
) -> None:
    unknown = write(tmp_path / "a.csv", "external_id,mail,name,joined_at\n")
    with pytest.raises(InvalidInput, match="unknown column 'mail'"):
        await import_members(conn, unknown, now=NOW)
    missing = write(tmp_path / "b.csv", "external_id,email,name\n")
    with pytest.raises(InvalidInput, match="missing column"):
        await import_members(conn, missing, now=NOW)
    shift_jis = tmp_path / "c.csv"
    shift_jis.write_bytes((MEMBERS_HEADER + "S1,s@example.com,,山田,,,,2020-01-01T00:00:00Z\n")
                          .encode("shift_jis"))
    with pytest.raises(InvalidInput, match="not UTF-8"):
        await import_members(conn, shift_jis, now=NOW)
    assert await conn.fetchval("select count(*) from members") == 0


async def test_a_second_import_at_the_same_time_is_refused(
    conn: Connection, fresh_database: str, tmp_path: Path
) -> None:
    source = write(tmp_path / "members.csv", MEMBERS_HEADER
                   + "A1,a1@example.com,,Aoi,,,,2020-04-01T10:00:00+09:00\n")
    other = await asyncpg.connect(fresh_database)
    try:
        await other.execute("select pg_advisory_lock($1)", IMPORT_LOCK_KEY)
        with pytest.raises(Conflict, match="another import is running"):
            await import_members(conn, source, now=NOW)
        await other.execute("select pg_advisory_unlock($1)", IMPORT_LOCK_KEY)
    finally:
        await other.close()
    summary = await import_members(conn, source, now=NOW)
    assert summary.inserted == 1


# -- purchases -------------------------------------------------------------------------------


async def test_purchases_of_unknown_members_and_stores_and_bad_rows_are_rejected(
    conn: Connection, tmp_path: Path
) -> None:
    await import_two_members(conn, tmp_path)
    await conn.execute("insert into stores (code, name) values ('S1', 'Shibuya')")
    at = "2024-06-01T12:00:00+09:00"
    source = write(tmp_path / "purchases.csv", PURCHASES_HEADER
                   + f"A1,S1,R1,{at},1000,\n"           # 2: in
                   + f"ZZ,S1,R2,{at},1000,\n"           # 3: unknown member
                   + f"A1,NOPE,R3,{at},1000,\n"         # 4: unknown store
                   + f"B2,S1,R1,{at},500,\n"            # 5: same receipt again
                   + f"A1,S1,R5,{at},-1,\n"             # 6: negative total
                   + f"A1,S1,R6,{at},12.5,\n"           # 7: not an integer
                   + f"A1,S1,R7,{at},100,200\n"         # 8: returned more than paid
                   + "A1,S1,R8,2024/06/01 12:00,100,\n"  # 9: not ISO 8601
                   + f"A1,S1,,{at},100,\n"              # 10: no receipt
                   + f"B2,S1,R10,{at},700,100\n")       # 11: in

    summary = await import_purchases(conn, source, now=NOW)

    assert (summary.read, summary.inserted, summary.present, summary.rejected) == (10, 2, 0, 8)
    assert [(r[0], r[1]) for r in report_rows(tmp_path / "purchases.rejected.csv")[1:]] == [
        ("3", "no member with external id ZZ"),
        ("4", "no store NOPE"),
        ("5", "receipt R1 of store S1 is also on line 2"),
        ("6", "total: expected `int` >= 0"),
        ("7", "total: expected `int`, got `str`"),
        ("8", "returned_amount: is more than the total"),
        ("9", "occurred_at: '2024/06/01 12:00' is not a date-time such as "
              "2026-11-23T12:00:00+09:00"),
        ("10", "receipt_id: required"),
    ]
    assert await conn.fetchval("select count(*) from stores") == 1


async def test_imported_purchases_earn_nothing_and_move_last_activity_forward(
    conn: Connection, tmp_path: Path
) -> None:
    await import_two_members(conn, tmp_path)
    # B2 was active on the platform after the purchases being imported: that stays.
    await conn.execute("update members set last_activity_at = '2025-01-01T00:00:00Z'"
                       " where external_id = 'B2'")
    source = write(tmp_path / "purchases.csv", PURCHASES_HEADER
                   + "A1,S1,R1,2023-06-01T12:00:00+09:00,1000,\n"
                   + "A1,S2,R1,2024-06-01T12:00:00+09:00,2500,500\n"
                   + "A1,S1,R2,2022-06-01T12:00:00+09:00,300,\n"
                   + "B2,S1,R3,2024-03-01T12:00:00+09:00,800,\n")

    summary = await import_purchases(conn, source, create_stores=True, now=NOW)

    assert (summary.inserted, summary.present, summary.rejected) == (4, 0, 0)
    assert summary.stores_created == 2
    members = await conn.fetch(
        """
        select m.external_id, m.joined_at, m.last_activity_at, b.purchase_count, b.available,
               b.lifetime_earned, b.version
          from members m join point_balances b using (member_id) order by external_id
        """)
    assert [tuple(r) for r in members] == [
        ("A1", dt.datetime(2020, 4, 1, 1, 0, tzinfo=dt.UTC),
         dt.datetime(2024, 6, 1, 3, 0, tzinfo=dt.UTC), 3, 0, 0, 1),
        ("B2", dt.datetime(2021, 4, 1, 1, 0, tzinfo=dt.UTC),
         dt.datetime(2025, 1, 1, tzinfo=dt.UTC), 1, 0, 0, 1),
    ]
    purchases = await conn.fetch(
        """
        select s.code, p.receipt_id, p.total, p.returned_amount, p.points_earned,
               p.points_redeemed, p.lines, p.currency, p.rule_version, t.name,
               t.revoked_at is not null as revoked
          from purchases p join stores s using (store_id) join terminals t using (terminal_id)
         order by s.code, p.receipt_id
        """)
    assert [tuple(r) for r in purchases] == [
        ("S1", "R1", 1000, 0, 0, 0, [], "JPY", 1, "history import", True),
        ("S1", "R2", 300, 0, 0, 0, [], "JPY", 1, "history import", True),
        ("S1", "R3", 800, 0, 0, 0, [], "JPY", 1, "history import", True),
        ("S2", "R1", 2500, 500, 0, 0, [], "JPY", 1, "history import", True),
    ]
    assert await conn.fetchval("select count(*) from point_entries") == 0
    assert await conn.fetchval("select count(*) from terminals") == 2


async def test_importing_the_same_purchases_twice_changes_nothing(
    conn: Connection, tmp_path: Path
) -> None:
    await import_two_members(conn, tmp_path)
    source = write(tmp_path / "purchases.csv", PURCHASES_HEADER
                   + "A1,S1,R1,2023-06-01T12:00:00+09:00,1000,\n"
                   + "B2,S1,R2,2024-06-01T12:00:00+09:00,2500,\n"
                   + "ZZ,S1,R3,2024-06-01T12:00:00+09:00,2500,\n"
                   + "A1,S2,R1,2024-07-01T12:00:00+09:00,400,\n")
    first = await import_purchases(conn, source, create_stores=True, now=NOW, batch_size=2)
    before = await counts(conn)

    second = await import_purchases(conn, source, create_stores=True, now=NOW, batch_size=2)

    assert (first.inserted, first.present, first.rejected, first.stores_created) == (3, 0, 1, 2)
    assert (second.inserted, second.present, second.rejected, second.stores_created) == (
        0, 3, 1, 0)
    assert await counts(conn) == before
    assert (before["purchases"], before["stores"], before["terminals"],
            before["purchase_count"]) == (3, 2, 2, 3)


async def test_a_receipt_recorded_at_the_till_is_already_present(
    conn: Connection, tmp_path: Path
) -> None:
    await import_two_members(conn, tmp_path)
    source = write(tmp_path / "purchases.csv", PURCHASES_HEADER
                   + "A1,S1,R1,2023-06-01T12:00:00+09:00,1000,\n")
    await import_purchases(conn, source, create_stores=True, now=NOW)
    # The same receipt in another file (say, an overlapping export) for another member.
    other = write(tmp_path / "other.csv", PURCHASES_HEADER
                  + "B2,S1,R1,2023-06-01T12:00:00+09:00,1000,\n")

    summary = await import_purchases(conn, other, now=NOW)

    assert (summary.inserted, summary.present, summary.rejected) == (0, 1, 0)
    assert await conn.fetchval("select count(*) from purchases") == 1


async def test_a_dormant_member_with_a_later_imported_purchase_is_active_again(
    conn: Connection, tmp_path: Path
) -> None:
    await import_two_members(conn, tmp_path)
    # Both last active on 1 January 2026 and flagged dormant by the job on 1 August.
    await conn.execute("update members set last_activity_at = '2026-01-01T00:00:00Z'")
    await conn.execute("delete from member_status_changes")
    await conn.execute("update members set status = 'active'")
    await conn.execute("delete from member_status_changes")
    await flag_dormant(conn, now=dt.datetime(2026, 8, 1, tzinfo=TOKYO), tz=TOKYO, days=180)
    source = write(tmp_path / "purchases.csv", PURCHASES_HEADER
                   + "A1,S1,R1,2026-11-10T12:00:00+09:00,1000,\n"
                   + "B2,S1,R2,2025-12-01T12:00:00+09:00,1000,\n")

    await import_purchases(conn, source, create_stores=True, now=NOW)

    statuses = await conn.fetch(
        "select external_id, status, status_changed_at from members order by 1")
    assert [tuple(r) for r in statuses] == [
        ("A1", "active", dt.datetime(2026, 11, 10, 12, 0, tzinfo=TOKYO)),
        ("B2", "dormant", dt.datetime(2026, 7, 1, tzinfo=TOKYO)),
    ]
    # A1 is active again at the purchase, not at the import; B2's older receipt wakes no one,
    # and B2 went quiet on 1 July (181 business days after 1 January), as a nightly job would
    # have seen, not on the day the job happened to run.
    changes = await conn.fetch(
        """
        select m.external_id, c.changed_at, c.from_status, c.to_status, c.reason
          from member_status_changes c join members m using (member_id)
         order by m.external_id, c.changed_at, c.change_id
        """)
    assert [tuple(r) for r in changes] == [
        ("A1", dt.datetime(2026, 8, 1, tzinfo=TOKYO), "active", "dormant", "inactivity"),
        ("A1", dt.datetime(2026, 11, 10, 12, 0, tzinfo=TOKYO), "dormant", "active",
         "imported purchase"),
        ("B2", dt.datetime(2026, 7, 1, tzinfo=TOKYO), "active", "dormant", "inactivity"),
    ]
    events = await conn.fetch(
        "select data->>'to_status' as to_status, occurred_at from outbox"
        " where type = 'member.status_changed' and occurred_at > '2026-10-01' order by 2")
    assert [tuple(r) for r in events] == [
        ("active", dt.datetime(2026, 11, 10, 12, 0, tzinfo=TOKYO))]


async def test_purchases_of_a_merged_member_go_to_the_survivor(
    conn: Connection, tmp_path: Path
) -> None:
    await import_two_members(conn, tmp_path)
    await conn.execute(
        """
        update members set status = 'merged',
               merged_into = (select member_id from members where external_id = 'B2')
         where external_id = 'A1'
        """)
    source = write(tmp_path / "purchases.csv", PURCHASES_HEADER
                   + "A1,S1,R1,2023-06-01T12:00:00+09:00,1000,\n")

    await import_purchases(conn, source, create_stores=True, now=NOW)

    owner = await conn.fetchval(
        "select m.external_id from purchases p join members m using (member_id)")
    assert owner == "B2"


# -- progress --------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _clock(times: list[float]) -> Iterator[float]:
    yield from times


def test_progress_is_plain_lines_off_a_terminal_and_a_bar_on_one() -> None:
    plain = io.StringIO()
    ticks = _clock([0.0, 5.0, 10.0, 12.0, 15.0, 20.0])
    bar = Progress("reading", 1000, plain, clock=lambda: next(ticks))
    bar.advance(100)  # 5 s: too soon for a line
    bar.advance(400)  # 10 s
    bar.advance(300)  # 12 s: too soon
    bar.advance(200)  # 15 s: too soon
    bar.finish()      # 20 s
    assert plain.getvalue().splitlines() == [
        "reading: 500/1,000 rows  50%  50 rows/s  ETA 10s",
        "reading: 1,000/1,000 rows 100%  50 rows/s  done in 20s",
    ]

    screen = _Terminal()
    ticks = _clock([0.0, 0.1, 0.3, 1.0])
    bar = Progress("writing", 100, screen, clock=lambda: next(ticks))
    bar.advance(10)   # 0.1 s: too soon
    bar.advance(40)   # 0.3 s
    bar.finish()      # 1 s
    assert screen.getvalue() == (
        "\rwriting  [###############---------------] 50/100 rows  50%  167 rows/s  ETA 0s\x1b[K"
        "\rwriting  [##############################] 50/50 rows 100%  50 rows/s  done in 1s"
        "\x1b[K\n")


# -- the command -----------------------------------------------------------------------------


def test_loyalty_import_prints_what_it_did_and_writes_the_report(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = write(tmp_path / "members.csv", MEMBERS_HEADER
                    + "A1,a1@example.com,,Aoi,,,,2020-04-01T10:00:00+09:00\n"
                    + "A2,a1@example.com,,Again,,,,2020-04-01T10:00:00+09:00\n")
    purchases = write(tmp_path / "purchases.csv", PURCHASES_HEADER
                      + "A1,S1,R1,2023-06-01T12:00:00+09:00,1000,\n"
                      + "A2,S1,R2,2023-06-01T12:00:00+09:00,1000,\n")

    cli.main(["import", "members", str(members)])
    cli.main(["import", "purchases", str(purchases), "--create-stores",
              "--report", str(tmp_path / "refused.csv"), "--batch-size", "1"])
    cli.main(["import", "purchases", str(purchases), "--report", str(tmp_path / "again.csv")])

    out = capsys.readouterr()
    assert out.out.splitlines() == [
        "members: 2 rows read: 1 inserted, 0 already present, 1 rejected",
        f"report of rejected rows: {tmp_path / 'members.rejected.csv'}",
        "purchases: 2 rows read: 1 inserted, 0 already present, 1 rejected, 1 store created",
        f"report of rejected rows: {tmp_path / 'refused.csv'}",
        "purchases: 2 rows read: 0 inserted, 1 already present, 1 rejected",
        f"report of rejected rows: {tmp_path / 'again.csv'}",
    ]
    assert "reading: 2/2 rows 100%" in out.err
    assert report_rows(tmp_path / "members.rejected.csv")[1][:2] == [
        "3", "email is also on line 2"]
    assert report_rows(tmp_path / "refused.csv")[1][:2] == ["3", "no member with external id A2"]
    assert report_rows(tmp_path / "again.csv")[1:] == report_rows(tmp_path / "refused.csv")[1:]
    imported = asyncio.run(query(cli_env, "select count(*) from purchases"))
    assert imported[0]["count"] == 1


def test_loyalty_import_refuses_a_missing_file(cli_env: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="cannot read"):
        cli.main(["import", "members", str(tmp_path / "nothing.csv")])


def test_loyalty_import_refuses_a_report_it_cannot_write_before_importing(
    cli_env: str, tmp_path: Path
) -> None:
    members = write(tmp_path / "members.csv", MEMBERS_HEADER
                    + "A1,a1@example.com,,Aoi,,,,2020-04-01T10:00:00+09:00\n")
    with pytest.raises(SystemExit, match="cannot write the report"):
        cli.main(["import", "members", str(members), "--report",
                  str(tmp_path / "no" / "such" / "dir.csv")])
    imported = asyncio.run(query(cli_env, "select count(*) from members"))
    assert imported[0]["count"] == 0


# -- what an import leaves for the analytics ---------------------------------------------------


async def test_kpis_right_after_a_members_import_count_the_imported_members(
    conn: Connection, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    yesterday = now.astimezone(TOKYO).date() - dt.timedelta(days=1)
    long_ago = dt.date(2025, 12, 30)
    # The nightly snapshots of two days, taken before the import: no members yet.
    for day in (long_ago, yesterday):
        await snapshot_kpis(conn, day=day, tz=TOKYO, point_value=1.0)
    source = write(tmp_path / "members.csv", MEMBERS_HEADER
                   + "A1,a1@example.com,,Aoi,,,,2026-01-01T10:00:00+09:00\n"
                   + "B2,b2@example.com,,Ben,,,,2026-01-02T10:00:00+09:00\n")

    await import_members(conn, source, now=now)
    figures = await kpis(conn, first=yesterday, last=yesterday, tz=TOKYO, now=now,
                         margin=0.3, point_value=1.0)

    # Without the stale snapshot the day reads from history: both members, dormant since
    # July (180 days after joining, nothing since).
    assert (figures.members.total, figures.members.dormant, figures.members.active_at_start) \
        == (2, 2, 0)
    assert figures.snapshot_days == 0
    # Days before anyone imported had joined keep theirs.
    assert [r["day"] for r in await conn.fetch("select day from kpi_daily")] == [long_ago]
