"""Import of a brand's history from CSV files: its members, then their past purchases.

A brand moving onto the platform brings years of customers and receipts; its KPIs, tiers and
dormancy must be right on the first day, and a file of a million rows must load in minutes.

- The file is streamed: each row is validated by type (the Structs below, built from the same
  constrained types as the API's bodies) and normalised by the API's own functions, then the
  rows that pass are COPYed into a temporary staging table in batches. Memory stays bounded
  whatever the file's size, and nothing is written to the programme's tables before the whole
  file has been read.
- Everything that compares rows with each other or with the database (duplicates within the
  file, external ids already imported, e-mails and phones of other members, unknown members
  and stores, receipts already recorded) is set-based SQL over the staging table. Rows are
  then written in batches (members in file order, purchases in member order), one transaction
  each, so a till's purchase never waits long for a member an import is touching.
- Idempotent by external ids: a member is found again by ``external_id``, a purchase by
  (store, receipt id), the same key a till's purchase has. A run that stopped half-way (killed,
  disconnected) is finished by running it again.
- Imported purchases earn no points: they are history, not new business. They count for
  everything that reads purchases (RFM, tier measures, KPIs) and move the member's last
  activity forward, so dormancy is right too.

Rejected rows go to a report (line, reason, the row as it was), written at the end from the
reasons kept in the database and a second pass over the file, both in line order.
See docs/importing.md for the columns and the decisions.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

import asyncpg
import msgspec

from loyalty.core.db import Connection, init_connection, migrate
from loyalty.core.errors import Conflict, InvalidInput
from loyalty.core.normalize import (
    normalize_email,
    normalize_kana,
    normalize_name,
    normalize_phone,
    normalize_profile_text,
    normalize_text,
    search_key,
)
from loyalty.members.profiles import fill_member_skeletons
from loyalty.points.rules import ensure_default_rules
from schemas.base import (
    BirthDate,
    Code,
    Email,
    Instant,
    Name,
    Phone,
    PostalCode,
    ShortText,
    decode_edge,
    text,
)
from schemas.points import Money, ReceiptId

# Any fixed 64-bit number; two imports at once would each decide against a database the other
# is changing, so the second is refused.
IMPORT_LOCK_KEY = 0x4C4F59494D5054  # "LOYIMPT"
# As at the till: a clock a little ahead is tolerated, a time further in the future is a mistake.
CLOCK_SKEW = dt.timedelta(minutes=5)
# Merges are followed to the surviving member, as the till does, this many hops at most.
MERGE_HOPS = 5
DEFAULT_BATCH_SIZE = 50_000

ExternalId = Annotated[str, text(64, min_length=1)]


class MemberRow(msgspec.Struct, forbid_unknown_fields=True):
    """One row of a members file; fields without a default are required columns."""

    external_id: ExternalId
    name: Name
    joined_at: Instant
    email: Email | None = None
    phone: Phone | None = None
    name_kana: ShortText | None = None
    birth_date: BirthDate | None = None
    postal_code: PostalCode | None = None


class PurchaseRow(msgspec.Struct, forbid_unknown_fields=True):
    """One row of a purchases file; fields without a default are required columns."""

    member_external_id: ExternalId
    store_code: Code
    receipt_id: ReceiptId
    occurred_at: Instant
    total: Money
    returned_amount: Money = 0


def columns(row_type: type[msgspec.Struct]) -> tuple[list[str], list[str]]:
    """(required, optional) column names of a file, from its row Struct."""
    info = msgspec.structs.fields(row_type)
    return ([f.name for f in info if f.required], [f.name for f in info if not f.required])


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: every row read is inserted, already present or rejected."""

    kind: str
    read: int
    inserted: int
    present: int
    rejected: int
    report: Path
    stores_created: int = 0

    def __str__(self) -> str:
        stores = (f", {self.stores_created:,} store{'s' if self.stores_created > 1 else ''}"
                  " created") if self.stores_created else ""
        return (f"{self.kind}: {self.read:,} rows read: {self.inserted:,} inserted, "
                f"{self.present:,} already present, {self.rejected:,} rejected{stores}\n"
                f"report of rejected rows: {self.report}")


async def _record_rejections(
    conn: Connection, checked: Literal["import_members_checked", "import_purchases_checked"],
) -> int:
    """Copy the rows the check refused, with their reasons, to the report's table; how many.
    (``checked`` names one of this module's staging tables.)"""
    count: int = await conn.fetchval(
        f"""
        with r as (insert into import_rejections (line, reason)
                   select line, reason from {checked}
                    where reason is not null returning 1)
        select count(*) from r
        """)
    return count


def default_report_path(source: Path) -> Path:
    """``FILE.csv`` → ``FILE.rejected.csv``, next to the input."""
    return source.with_name(source.name.removesuffix(".csv") + ".rejected.csv")


def _report_path(source: Path, report: Path | None) -> Path:
    """The report's path, made (empty) now: an import must not find out only at its end,
    with everything written, that it cannot say what it refused."""
    report = report or default_report_path(source)
    if report.resolve() == source.resolve():
        raise InvalidInput("the report would overwrite the input", field="report")
    try:
        report.touch()
    except OSError as exc:
        raise InvalidInput(f"cannot write the report {report}: {exc.strerror}",
                           field="report") from None
    return report


# -- progress ---------------------------------------------------------------------------------


class Progress:
    """Rows done out of a total on a stream (stderr): on a terminal, a bar redrawn in place at
    most five times a second; elsewhere (a log file, a pipe) a plain line every ten seconds.
    Either way one last line when the phase ends."""

    def __init__(self, label: str, total: int, stream: TextIO | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream
        self.clock = clock
        self.tty = stream is not None and stream.isatty()
        self.interval = 0.2 if self.tty else 10.0
        self.started = self.last = clock()

    def advance(self, rows: int) -> None:
        self.done += rows
        if self.stream is None:
            return
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._draw(now, final=False)

    def finish(self) -> None:
        # The total of the reading phase is estimated from the file's lines: blank lines and
        # fields spanning lines make it a little high.
        self.total = self.done
        if self.stream is not None:
            self._draw(self.clock(), final=True)

    def _draw(self, now: float, *, final: bool) -> None:
        assert self.stream is not None
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        total = max(self.total, self.done)
        share = self.done / total if total else 1.0
        if final:
            tail = f"done in {_duration(elapsed)}"
        else:
            tail = f"ETA {_duration((total - self.done) / rate) if rate else '?'}"
        figures = f"{self.done:,}/{total:,} rows {share:4.0%}  {rate:,.0f} rows/s  {tail}"
        if self.tty:
            filled = int(share * 30)
            self.stream.write(f"\r{self.label:<8} [{'#' * filled}{'-' * (30 - filled)}] "
                              f"{figures}\x1b[K" + ("\n" if final else ""))
        else:
            self.stream.write(f"{self.label}: {figures}\n")
        self.stream.flush()


def _duration(seconds: float | str) -> str:
    if isinstance(seconds, str):
        return seconds
    whole = int(seconds + 0.5)
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{whole}s"


# -- reading ----------------------------------------------------------------------------------


def _count_lines(path: Path) -> int:
    count = 0
    try:
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                count += chunk.count(b"\n")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", field="file") from None
    return count


@contextlib.contextmanager
def _records(path: Path) -> Iterator[Iterator[tuple[int, list[str]]]]:
    """The file's non-blank records as (the line it starts on, its fields), header first.

    UTF-8, with or without the byte-order mark spreadsheets write; anything else stops the
    import before anything is written."""
    try:
        file = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", field="file") from None
    with file:
        reader = csv.reader(file)

        def records() -> Iterator[tuple[int, list[str]]]:
            while True:
                start = reader.line_num + 1
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except UnicodeDecodeError:
                    raise InvalidInput(
                        f"{path.name} is not UTF-8 (near line {start}): convert it first, e.g. "
                        "iconv -f SHIFT_JIS -t UTF-8", field="file") from None
                except csv.Error as exc:
                    raise InvalidInput(f"{path.name}, line {start}: {exc}", field="file") \
                        from None
                if fields:
                    yield start, fields

        yield records()


def _header(fields: list[str], row_type: type[msgspec.Struct]) -> list[str]:
    names = [name.strip().lower() for name in fields]
    while names and not names[-1]:
        names.pop()
    required, optional = columns(row_type)
    unknown = [name for name in names if name not in required + optional]
    if unknown:
        raise InvalidInput(f"unknown column {unknown[0]!r}; the columns are "
                           f"{', '.join(required + optional)}", field="file")
    missing = [name for name in required if name not in names]
    if missing:
        raise InvalidInput(f"missing column(s) {', '.join(missing)}", field="file")
    if len(set(names)) != len(names):
        raise InvalidInput("a column appears twice in the header", field="file")
    return names


_MISSING = re.compile(r"Object missing required field `(\w+)`")


def _reason(exc: msgspec.ValidationError) -> str:
    """msgspec's message, said of the column: ``total: expected `int` >= 0``."""
    message = str(exc)
    if missing := _MISSING.match(message):
        return f"{missing.group(1)}: required"
    message, _, where = message.rpartition(" - at `$.")
    if not where:
        return str(exc)
    return f"{where.rstrip('`')}: {message[:1].lower()}{message[1:]}"


@dataclass
class _Staged:
    """What the reading phase left: rows staged, rows rejected (their reasons are in
    ``import_rejections``), and the header for the report."""

    header: list[str]
    read: int = 0
    staged: int = 0
    rejected: int = 0


async def _stage(
    conn: Connection, source: Path, *, row_type: type[msgspec.Struct], table: str,
    table_columns: Sequence[str], to_record: Callable[[Any], tuple[Any, ...]],
    batch_size: int, progress: TextIO | None,
) -> _Staged:
    """Read ``source`` into the staging ``table``, COPYing every ``batch_size`` rows; rows
    that fail their type or ``to_record`` go to ``import_rejections`` with the reason."""
    bar = Progress("reading", max(_count_lines(source) - 1, 0), progress)
    staged: list[tuple[Any, ...]] = []
    rejected: list[tuple[int, str]] = []
    convert = msgspec.convert

    async def flush() -> None:
        if staged:
            await conn.copy_records_to_table(table, records=staged, columns=table_columns)
            staged.clear()
        if rejected:
            await conn.copy_records_to_table("import_rejections", records=rejected)
            rejected.clear()

    with _records(source) as records:
        first = next(records, None)
        if first is None:
            raise InvalidInput(f"{source.name} is empty: it needs a header", field="file")
        header = _header(first[1], row_type)
        result = _Staged(header=[name.strip() for name in first[1]])
        width = len(header)
        since_drawn = 0
        for line, fields in records:
            result.read += 1
            since_drawn += 1
            if len(fields) > width and not any(f.strip() for f in fields[width:]):
                fields = fields[:width]  # trailing empty cells, as spreadsheets export them
            if len(fields) != width:
                rejected.append((line, f"{len(fields)} fields where the header has {width}"))
            else:
                values: dict[str, str] = {}
                for name, value in zip(header, fields, strict=True):
                    value = value.strip()
                    if value:
                        values[name] = value
                try:
                    record = to_record(convert(values, row_type, strict=False,
                                                      dec_hook=decode_edge))
                except msgspec.ValidationError as exc:
                    rejected.append((line, _reason(exc)))
                except InvalidInput as exc:
                    rejected.append((line, f"{exc.field}: {exc.detail}" if exc.field
                                     else exc.detail))
                else:
                    result.staged += 1
                    staged.append((result.staged, line, *record))
            if len(staged) >= batch_size or len(rejected) >= batch_size:
                result.rejected += len(rejected)
                await flush()
            if since_drawn >= 1024:
                bar.advance(since_drawn)
                since_drawn = 0
        result.rejected += len(rejected)
        await flush()
        bar.advance(since_drawn)
    bar.finish()
    await conn.execute(f"analyze {table}")
    return result


# -- the report -------------------------------------------------------------------------------


async def _write_report(conn: Connection, source: Path, report: Path, header: list[str]) -> int:
    """Write every rejected row, in line order: the reasons come from the database, the rows
    from a second pass over the file (neither is held in memory)."""
    written = 0
    with report.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["line", "reason", *header])
        async with conn.transaction():
            rejections = conn.cursor(
                "select line, reason from import_rejections order by line", prefetch=10_000)
            pending = rejections.__aiter__()
            try:
                want = await pending.__anext__()
            except StopAsyncIteration:
                return 0
            with _records(source) as records:
                for line, fields in records:
                    if line != want["line"]:
                        continue
                    writer.writerow([line, want["reason"], *fields])
                    written += 1
                    try:
                        want = await pending.__anext__()
                    except StopAsyncIteration:
                        break
    return written


# -- members ----------------------------------------------------------------------------------

_MEMBER_STAGING = """
create temporary table import_members (
    seq          int not null,
    line         int not null,
    external_id  text not null,
    email        text,
    phone        text,
    name         text not null,
    name_kana    text not null,
    name_key     text not null,
    kana_key     text not null,
    birth_date   date,
    postal_code  text,
    joined_at    timestamptz not null
);
create temporary table import_members_checked (
    like import_members,
    present  boolean not null,
    reason   text
);
"""
_MEMBER_COLUMNS = ("seq", "line", "external_id", "email", "phone", "name", "name_kana",
                   "name_key", "kana_key", "birth_date", "postal_code", "joined_at")

# Which staged rows may be inserted. In order: a row that repeats the external id, e-mail or
# phone of an earlier row of the file is rejected (whether or not that row goes in, so a second
# run decides the same); a row whose external id is already a member's is present; a row whose
# e-mail or phone is another member's is rejected, not merged.
_CHECK_MEMBERS = """
insert into import_members_checked
select s.seq, s.line, s.external_id, s.email, s.phone, s.name, s.name_kana, s.name_key,
       s.kana_key, s.birth_date, s.postal_code, s.joined_at,
       s.first_by_id = s.line
           and exists (select 1 from members m where m.external_id = s.external_id),
       case
           when s.first_by_id < s.line
               then format('external_id %s is also on line %s', s.external_id, s.first_by_id)
           when s.email is not null and s.first_by_email < s.line
               then format('email is also on line %s', s.first_by_email)
           when s.phone is not null and s.first_by_phone < s.line
               then format('phone is also on line %s', s.first_by_phone)
           when exists (select 1 from members m where m.external_id = s.external_id)
               then null
           else coalesce(
               (select 'email belongs to member ' || m.member_number
                  from members m where m.email = s.email),
               (select 'phone belongs to member ' || m.member_number
                  from members m where m.phone = s.phone))
       end
  from (select i.*,
               min(i.line) over (partition by i.external_id) as first_by_id,
               min(i.line) over (partition by i.email) as first_by_email,
               min(i.line) over (partition by i.phone) as first_by_phone
          from import_members i) s
"""

# One batch, in file order. Any unique index may still refuse a row (a member signing up with
# that e-mail since the check): the row is left out, not the batch, and reported.
_INSERT_MEMBERS = """
with batch as (
    select * from import_members_checked where seq > $1 and seq <= $2
), inserted as (
    insert into members (external_id, email, phone, name, name_kana, name_key, kana_key,
                         birth_date, postal_code, joined_at, last_activity_at)
    select external_id, email, phone, name, name_kana, name_key, kana_key, birth_date,
           postal_code, joined_at, joined_at
      from batch
     where reason is null and not present
     order by seq
    on conflict do nothing
    returning member_id, external_id
), balances as (
    insert into point_balances (member_id) select member_id from inserted
), raced as (
    insert into import_rejections (line, reason)
    select b.line, 'its external id, email or phone was taken during the import'
      from batch b
     where b.reason is null and not b.present
       and not exists (select 1 from inserted i where i.external_id = b.external_id)
    returning line
)
select (select count(*) from inserted) as inserted,
       (select count(*) from batch where present) as present,
       (select count(*) from raced) as raced
"""


def _member_record(region: str, now: dt.datetime) -> Callable[[MemberRow], tuple[Any, ...]]:
    def record(row: MemberRow) -> tuple[Any, ...]:
        external_id = normalize_text(row.external_id)
        if not external_id:
            raise InvalidInput("required", field="external_id")
        if row.email is None and row.phone is None:
            raise InvalidInput("an email or a phone is required")
        email = normalize_email(row.email) if row.email is not None else None
        phone = normalize_phone(row.phone, region) if row.phone is not None else None
        name = normalize_name(row.name)
        kana = normalize_kana(row.name_kana or "")
        if row.joined_at > now + CLOCK_SKEW:
            raise InvalidInput("is in the future", field="joined_at")
        postal_code = (normalize_profile_text(row.postal_code, field="postal_code", max_length=16)
                       if row.postal_code else None)
        return (external_id, email, phone, name, kana, search_key(name), search_key(kana),
                row.birth_date, postal_code or None, row.joined_at)

    return record


async def import_members(
    conn: Connection, source: Path, *, report: Path | None = None, region: str = "JP",
    now: dt.datetime | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
    progress: TextIO | None = None,
) -> ImportSummary:
    """Add the members of a CSV file (docs/importing.md) not imported before; report the rest."""
    now = now or dt.datetime.now(dt.UTC)
    report = _report_path(source, report)
    async with _import_session(conn, _MEMBER_STAGING):
        staged = await _stage(conn, source, row_type=MemberRow, table="import_members",
                              table_columns=_MEMBER_COLUMNS,
                              to_record=_member_record(region, now),
                              batch_size=batch_size, progress=progress)
        checking = Progress("checking", staged.staged, progress)
        async with conn.transaction():
            await conn.execute(_CHECK_MEMBERS)
            await conn.execute("create index on import_members_checked (seq)")
            await conn.execute("analyze import_members_checked")
            rejected = await _record_rejections(conn, "import_members_checked")
        checking.advance(staged.staged)
        checking.finish()
        inserted = present = raced = 0
        bar = Progress("writing", staged.staged, progress)
        for start in range(0, staged.staged, batch_size):
            async with conn.transaction():
                row = await conn.fetchrow(_INSERT_MEMBERS, start, start + batch_size)
            assert row is not None
            inserted += row["inserted"]
            present += row["present"]
            raced += row["raced"]
            bar.advance(min(batch_size, staged.staged - start))
        bar.finish()
        await _write_report(conn, source, report, staged.header)
    # The set-based insert leaves the look-alike keys (migration 0016) to the one function
    # that computes them.
    await fill_member_skeletons(conn, batch_size=batch_size)
    return ImportSummary(kind="members", read=staged.read, inserted=inserted, present=present,
                         rejected=staged.rejected + rejected + raced, report=report)


# -- purchases --------------------------------------------------------------------------------

_PURCHASE_STAGING = """
create temporary table import_purchases (
    seq                 int not null,
    line                int not null,
    member_external_id  text not null,
    store_code          text not null,
    receipt_id          text not null,
    occurred_at         timestamptz not null,
    total               bigint not null,
    returned_amount     bigint not null
);
create temporary table import_member_ids (
    external_id  text primary key,
    member_id    uuid not null,
    status       text not null
);
create temporary table import_purchases_checked (
    seq              int not null,
    line             int not null,
    member_id        uuid,
    store_id         uuid,
    store_code       text not null,
    receipt_id       text not null,
    occurred_at      timestamptz not null,
    total            bigint not null,
    returned_amount  bigint not null,
    reason           text
);
create temporary table import_touched (
    member_id  uuid primary key,
    latest     timestamptz not null,
    purchases  bigint not null
);
"""
_PURCHASE_COLUMNS = ("seq", "line", "member_external_id", "store_code", "receipt_id",
                     "occurred_at", "total", "returned_amount")

# The member each external id names: followed through merges to the survivor, as the till does
# with a merged-away member's number.
_RESOLVE_MEMBERS = """
insert into import_member_ids (external_id, member_id, status)
with recursive walk as (
    select m.external_id, m.member_id, m.status, m.merged_into, 0 as hops
      from members m
     where m.external_id in (select member_external_id from import_purchases)
    union all
    select w.external_id, m.member_id, m.status, m.merged_into, w.hops + 1
      from walk w join members m on m.member_id = w.merged_into
     where w.status = 'merged' and w.hops < $1
)
select distinct on (external_id) external_id, member_id, status
  from walk
 order by external_id, hops desc
"""

# A receipt repeated within the file is rejected after its first line (whether or not that one
# goes in, so a second run decides the same); then unknown or erased members, then unknown
# stores unless they are to be created. Receipts already recorded are found per batch.
# Rows are numbered for writing in member order: each member's purchases then fall in one
# batch (their balance and last activity are updated once, not once per batch), and the
# purchases' member-keyed indexes are written in order.
_CHECK_PURCHASES = """
insert into import_purchases_checked
select row_number() over (order by r.member_id, s.occurred_at, s.line), s.line, r.member_id,
       st.store_id, s.store_code, s.receipt_id, s.occurred_at, s.total, s.returned_amount,
       case
           when s.first_line < s.line
               then format('receipt %s of store %s is also on line %s',
                           s.receipt_id, s.store_code, s.first_line)
           when r.member_id is null
               then format('no member with external id %s', s.member_external_id)
           when r.status = 'erased'
               then format('member %s is erased', s.member_external_id)
           when r.status = 'merged'
               then format('member %s is merged more than %s times over', s.member_external_id,
                           $2::int)
           when st.store_id is null and not $1
               then format('no store %s', s.store_code)
       end
  from (select i.*,
               min(i.line) over (partition by i.store_code, i.receipt_id) as first_line
          from import_purchases i) s
  left join import_member_ids r on r.external_id = s.member_external_id
  left join stores st on st.code = s.store_code
"""

_CREATE_STORES = """
with created as (
    insert into stores (code, name)
    select distinct store_code, store_code from import_purchases_checked
     where reason is null and store_id is null
     order by store_code
    on conflict (code) do nothing
    returning 1
)
select count(*) from created
"""
_FILL_STORES = """
update import_purchases_checked c set store_id = s.store_id
  from stores s
 where c.reason is null and c.store_id is null and s.code = c.store_code
"""

# Purchases name a terminal: each store gets one "history import" terminal, made here once.
# Its key is never issued (a random hash, and revoked from the start), so it can never
# authenticate; it says where the row came from.
_IMPORT_TERMINALS = """
insert into terminals (store_id, name, key_prefix, key_hash, revoked_at)
select s.store_id, 'history import', 'import:' || s.store_id,
       sha256(convert_to(gen_random_uuid()::text || clock_timestamp()::text, 'UTF8')), $1
  from (select distinct store_id from import_purchases_checked where reason is null) s
on conflict (key_prefix) do nothing
"""

# One batch: receipts already recorded at their store are present (looked up one by one in
# the receipt index: a hash of every purchase would grow with the table); the others go in,
# earning nothing, and the members they touch are gathered for the next two statements. A
# receipt a till records meanwhile is refused by the index, and counts as present.
_INSERT_PURCHASES = """
with batch as (
    select c.*, t.terminal_id, found.present is not null as present
      from import_purchases_checked c
      join terminals t on t.key_prefix = 'import:' || c.store_id
      left join lateral (
          select true as present from purchases p
           where p.store_id = c.store_id and p.receipt_id = c.receipt_id
           limit 1) found on true
     where c.seq > $1 and c.seq <= $2 and c.reason is null
), inserted as (
    insert into purchases (member_id, purchase_id, store_id, terminal_id, receipt_id,
                           occurred_at, currency, total, lines, points_earned, points_redeemed,
                           rule_version, returned_amount, recorded_at)
    select member_id, uuid_v7(), store_id, terminal_id, receipt_id, occurred_at, $3, total,
           '[]', 0, 0, $4, returned_amount, $5
      from batch
     where not present
     order by seq
    on conflict do nothing
    returning member_id, occurred_at
), touched as (
    insert into import_touched (member_id, latest, purchases)
    select member_id, max(occurred_at), count(*) from inserted group by member_id
    returning purchases
)
select (select count(*) from batch) as candidates,
       (select coalesce(sum(purchases), 0) from touched) as inserted
"""

# The purchase count follows the purchases (no first-purchase bonus for a member with a
# history), under a new balance version so a till's purchase read before it reads again.
# Rows are locked in member order, as the other batch writers lock them.
_COUNT_PURCHASES = """
with locked as materialized (
    select b.member_id from point_balances b
     where b.member_id in (select member_id from import_touched)
     order by b.member_id
       for no key update
)
update point_balances b
   set purchase_count = b.purchase_count + t.purchases, version = b.version + 1, updated_at = $1
  from import_touched t
 where b.member_id = t.member_id and b.member_id in (select member_id from locked)
"""

# Last activity moves forward only. A dormant member whose last activity moves is active again
# (the trigger of migration 0010 does it and records why).
_MOVE_ACTIVITY = """
with locked as materialized (
    select m.member_id from members m join import_touched t using (member_id)
     where m.last_activity_at < t.latest
     order by m.member_id
       for no key update of m
)
update members m set last_activity_at = t.latest
  from import_touched t
 where m.member_id = t.member_id and m.last_activity_at < t.latest
   and m.member_id in (select member_id from locked)
"""


def _purchase_record(now: dt.datetime) -> Callable[[PurchaseRow], tuple[Any, ...]]:
    def record(row: PurchaseRow) -> tuple[Any, ...]:
        external_id = normalize_text(row.member_external_id)
        if not external_id:
            raise InvalidInput("required", field="member_external_id")
        if row.occurred_at > now + CLOCK_SKEW:
            raise InvalidInput("is in the future", field="occurred_at")
        if row.returned_amount > row.total:
            raise InvalidInput("is more than the total", field="returned_amount")
        return (external_id, row.store_code, row.receipt_id, row.occurred_at, row.total,
                row.returned_amount)

    return record


async def import_purchases(
    conn: Connection, source: Path, *, report: Path | None = None, currency: str = "JPY",
    create_stores: bool = False, now: dt.datetime | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE, progress: TextIO | None = None,
) -> ImportSummary:
    """Add the purchases of a CSV file (docs/importing.md) not recorded before, earning no
    points; report the rest. ``conn`` needs the jsonb codec (``init_connection``)."""
    now = now or dt.datetime.now(dt.UTC)
    report = _report_path(source, report)
    async with _import_session(conn, _PURCHASE_STAGING):
        staged = await _stage(conn, source, row_type=PurchaseRow, table="import_purchases",
                              table_columns=_PURCHASE_COLUMNS, to_record=_purchase_record(now),
                              batch_size=batch_size, progress=progress)
        checking = Progress("checking", staged.staged, progress)
        async with conn.transaction():
            await ensure_default_rules(conn)
            # History is recorded under the rules in force when it was loaded: it earned
            # nothing under them, and a version of its own would become the one in force.
            rule_version = await conn.fetchval("select max(version) from earning_rule_versions")
            await conn.execute(_RESOLVE_MEMBERS, MERGE_HOPS)
            await conn.execute(_CHECK_PURCHASES, create_stores, MERGE_HOPS)
            stores_created = 0
            if create_stores:
                stores_created = await conn.fetchval(_CREATE_STORES)
                await conn.execute(_FILL_STORES)
            await conn.execute(_IMPORT_TERMINALS, now)
            await conn.execute("create index on import_purchases_checked (seq)")
            await conn.execute("analyze import_purchases_checked")
            rejected = await _record_rejections(conn, "import_purchases_checked")
        checking.advance(staged.staged)
        checking.finish()
        inserted = candidates = 0
        bar = Progress("writing", staged.staged, progress)
        for start in range(0, staged.staged, batch_size):
            batch = await _write_purchases(conn, start, start + batch_size, currency,
                                           rule_version, now)
            candidates += batch[0]
            inserted += batch[1]
            bar.advance(min(batch_size, staged.staged - start))
        bar.finish()
        await _write_report(conn, source, report, staged.header)
    return ImportSummary(kind="purchases", read=staged.read, inserted=inserted,
                         present=candidates - inserted, rejected=staged.rejected + rejected,
                         report=report, stores_created=stores_created)


async def _write_purchases(conn: Connection, start: int, end: int, currency: str,
                           rule_version: int, now: dt.datetime) -> tuple[int, int]:
    """One batch in one transaction. It is safe to run again, so a deadlock with another
    batch writer (the dormancy job updates members too) costs a retry, not the import."""
    for attempt in range(5):
        try:
            async with conn.transaction():
                row = await conn.fetchrow(_INSERT_PURCHASES, start, end, currency,
                                          rule_version, now)
                assert row is not None
                await conn.execute(_COUNT_PURCHASES, now)
                await conn.execute(
                    "select set_config('loyalty.status_reason', 'imported purchase', true)")
                await conn.execute(_MOVE_ACTIVITY)
                await conn.execute("truncate import_touched")
            return int(row["candidates"]), int(row["inserted"])
        except asyncpg.DeadlockDetectedError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


# -- the session --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _import_session(conn: Connection, staging: str) -> AsyncIterator[None]:
    """One import at a time per database, with its temporary tables; all dropped at the end."""
    if not await conn.fetchval("select pg_try_advisory_lock($1)", IMPORT_LOCK_KEY):
        raise Conflict("another import is running on this database", code="import_running")
    try:
        await conn.execute("create temporary table import_rejections"
                           " (line int not null, reason text not null)")
        await conn.execute(staging)
        yield
    finally:
        tables = re.findall(r"create temporary table (\w+)", staging)
        await conn.execute(f"drop table if exists import_rejections, {', '.join(tables)}")
        await conn.execute("select pg_advisory_unlock($1)", IMPORT_LOCK_KEY)


async def run_import(
    dsn: str, kind: Literal["members", "purchases"], source: Path, *, report: Path | None,
    region: str, currency: str, create_stores: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE, show_progress: bool = True,
) -> ImportSummary:
    """What ``loyalty import`` runs: migrate, then import on a connection of its own."""
    if batch_size < 1:
        raise InvalidInput("--batch-size must be at least 1", field="batch_size")
    report = _report_path(source, report)
    progress = sys.stderr if show_progress else None
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await init_connection(conn)
        # The staged rows are sorted (for duplicates, for the order of writing) and kept in
        # temporary tables: in memory rather than on disk, on this connection of its own.
        await conn.execute("set work_mem = '256MB'; set temp_buffers = '256MB'")
        if kind == "members":
            return await import_members(conn, source, report=report, region=region,
                                        batch_size=batch_size, progress=progress)
        return await import_purchases(conn, source, report=report, currency=currency,
                                      create_stores=create_stores, batch_size=batch_size,
                                      progress=progress)
    finally:
        await conn.close()
