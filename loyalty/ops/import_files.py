"""What every import does with its file, whatever it holds: the one import at a time and its
temporary tables, reading the CSV into a staging table row by row (each row validated by its
Struct), progress on stderr, and the report of rejected rows.

The members and purchases imports are ``import_members`` and ``import_purchases``; the
overview, and ``loyalty import``'s entry point, are in ``importing``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO
from zoneinfo import ZoneInfo

import msgspec

from loyalty.core.db import Connection
from loyalty.core.errors import Conflict, InvalidInput
from schemas.base import (
    decode_edge,
    text,
)

# Any fixed 64-bit number; two imports at once would each decide against a database the other
# is changing, so the second is refused.
IMPORT_LOCK_KEY = 0x4C4F59494D5054  # "LOYIMPT"
# As at the till: a clock a little ahead is tolerated, a time further in the future is a mistake.
CLOCK_SKEW = dt.timedelta(minutes=5)
DEFAULT_BATCH_SIZE = 50_000
# The programme's business time zone and dormancy days when a caller names none: the defaults
# of LOYALTY_TIMEZONE and LOYALTY_DORMANCY_DAYS (``loyalty import`` passes the settings').
DEFAULT_TIMEZONE = ZoneInfo("Asia/Tokyo")
DEFAULT_DORMANCY_DAYS = 180

ExternalId = Annotated[str, text(64, min_length=1)]


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


async def record_rejections(
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
        """)  # noqa: S608 - the table is one of two staging tables, typed as a Literal
    return count


def default_report_path(source: Path) -> Path:
    """``FILE.csv`` → ``FILE.rejected.csv``, next to the input."""
    return source.with_name(source.name.removesuffix(".csv") + ".rejected.csv")


def prepare_report(source: Path, report: Path | None) -> Path:
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


class ImportProgress:
    """Where an import run in the background (the console's) keeps how far it has got, for a
    page to read: pass it as the import's ``progress`` stream. ``Progress`` records its phase
    (reading, checking, writing), rows done and the phase's total here as it advances, and
    writes nothing."""

    def __init__(self) -> None:
        self.phase = "waiting"
        self.done = 0
        self.total = 0

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class Progress:
    """Rows done out of a total on a stream (stderr): on a terminal, a bar redrawn in place at
    most five times a second; elsewhere (a log file, a pipe) a plain line every ten seconds.
    Either way one last line when the phase ends. An ``ImportProgress`` as the stream gets the
    figures themselves, at every step."""

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
        self.watch = stream if isinstance(stream, ImportProgress) else None
        self._report()

    def _report(self) -> None:
        if self.watch is not None:
            self.watch.phase, self.watch.done = self.label, self.done
            self.watch.total = max(self.total, self.done)

    def advance(self, rows: int) -> None:
        self.done += rows
        self._report()
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
        self._report()
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


def check_header(source: Path, row_type: type[msgspec.Struct]) -> list[str]:
    """The file's columns, read as an import reads them, or InvalidInput saying what to fix
    (empty, not UTF-8 or not CSV, an unknown or missing column); reads only the header."""
    with _records(source) as records:
        first = next(records, None)
        if first is None:
            raise InvalidInput(f"{source.name} is empty: it needs a header", field="file")
        return _header(first[1], row_type)


@dataclass
class Staged:
    """What the reading phase left: rows staged, rows rejected (their reasons are in
    ``import_rejections``), and the header for the report."""

    header: list[str]
    read: int = 0
    staged: int = 0
    rejected: int = 0


async def stage_file(
    conn: Connection, source: Path, *, row_type: type[msgspec.Struct], table: str,
    table_columns: Sequence[str], to_record: Callable[[Any], tuple[Any, ...]],
    batch_size: int, progress: TextIO | None,
) -> Staged:
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
        result = Staged(header=[name.strip() for name in first[1]])
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


async def write_report(conn: Connection, source: Path, report: Path, header: list[str]) -> int:
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

def write_rejections(report: Path, out: Path) -> int:
    """The report's rejected rows as ``row, field, reason`` (the file's line number, header
    line 1; the column the reason is about, when it names one of the header's; the reason),
    without the rows' contents: what a person fixing the file needs. How many rows."""
    written = 0
    with report.open(encoding="utf-8", newline="") as source, \
            out.open("w", encoding="utf-8", newline="") as target:
        rows = csv.reader(source)
        header = next(rows, None) or ["line", "reason"]
        names = {name.strip().lower() for name in header[2:] if name.strip()}
        writer = csv.writer(target)
        writer.writerow(["row", "field", "reason"])
        for line, reason, *_ in rows:
            first = re.split(r"[:\s]", reason, maxsplit=1)[0]
            writer.writerow([line, first if first in names else "", reason])
            written += 1
    return written


# -- the session --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def import_session(conn: Connection, staging: str) -> AsyncIterator[None]:
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


async def forget_snapshots(conn: Connection, since: dt.datetime | None, tz: ZoneInfo) -> int:
    """Drop the ``kpi_daily`` rows of the business day of ``since`` and after: a write into the
    past (an import) changed their figures, and the stocks of every later day. Those days are
    computed live until the ``kpi_snapshot`` job stores them again. Returns the rows dropped."""
    if since is None:
        return 0
    day = since.astimezone(tz).date()
    dropped = await conn.fetchval(
        "with gone as (delete from kpi_daily where day >= $1 returning 1)"
        " select count(*) from gone", day)
    return int(dropped)
