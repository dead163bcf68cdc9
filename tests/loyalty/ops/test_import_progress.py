"""What the console's import page needs of an import: its progress kept where a page can read
it (``ImportProgress``), and a file's header checked before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput
from loyalty.ops.import_files import ImportProgress, write_rejections
from loyalty.ops.import_members import import_members
from loyalty.ops.importing import check_import_file
from tests.loyalty.ops.test_import import (
    MEMBERS_HEADER,
    NOW,
    PURCHASES_HEADER,
    conn,
    report_rows,
    write,
)

__all__ = ["conn"]  # the fixture, used by name


async def test_an_import_keeps_its_phase_and_rows_done_in_the_progress_given(
    conn: Connection, tmp_path: Path,
) -> None:
    source = write(tmp_path / "members.csv", MEMBERS_HEADER
                   + "A1,a1@example.com,,Aoi,,,,2020-04-01T10:00:00+09:00\n"
                   + "B2,not-an-email,,Ben,,,,2021-04-01T10:00:00+09:00\n"
                   + "C3,c3@example.com,,Cho,,,,2021-04-01T10:00:00+09:00\n")
    progress = ImportProgress()
    assert (progress.phase, progress.done, progress.total) == ("waiting", 0, 0)
    summary = await import_members(conn, source, now=NOW, progress=progress)  # type: ignore[arg-type]
    assert (summary.inserted, summary.rejected) == (2, 1)
    # The last phase, finished: the two staged rows written.
    assert (progress.phase, progress.done, progress.total) == ("writing", 2, 2)


@pytest.mark.parametrize(("text", "kind", "message"), [
    ("", "members", "members.csv is empty: it needs a header"),
    ("external_id,name\n", "members", "missing column(s) joined_at"),
    ("hello world\n", "members", "unknown column 'hello world'; the columns are external_id"),
    (MEMBERS_HEADER, "purchases", "unknown column 'external_id'"),
    (PURCHASES_HEADER, "members", "unknown column 'member_external_id'"),
])
def test_a_file_that_cannot_be_imported_is_refused_by_its_header(
    tmp_path: Path, text: str, kind: str, message: str,
) -> None:
    source = write(tmp_path / "members.csv", text)
    with pytest.raises(InvalidInput) as refused:
        check_import_file(kind, source)  # type: ignore[arg-type]
    assert message in refused.value.detail


def test_a_file_that_is_not_text_is_refused_and_a_good_header_passes(tmp_path: Path) -> None:
    binary = tmp_path / "members.xlsx"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00\x81\x82 not text")
    with pytest.raises(InvalidInput, match="is not UTF-8"):
        check_import_file("members", binary)
    good = write(tmp_path / "ok.csv", MEMBERS_HEADER)
    assert check_import_file("members", good)[0] == "external_id"


async def test_the_rejections_are_written_as_row_field_and_reason_without_the_rows(
    conn: Connection, tmp_path: Path,
) -> None:
    source = write(tmp_path / "members.csv", MEMBERS_HEADER
                   + "A1,a1@example.com,,Aoi,,,,2020-04-01T10:00:00+09:00\n"
                   + "B2,not-an-email,,Ben,,,,2021-04-01T10:00:00+09:00\n"
                   + "A1,x@example.com,,Aya,,,,2021-04-01T10:00:00+09:00\n"
                   + "C3,c3@example.com,,Cho\n")
    summary = await import_members(conn, source, now=NOW, report=tmp_path / "report.csv")
    assert summary.rejected == 3
    out = tmp_path / "rejects.csv"
    assert write_rejections(summary.report, out) == 3
    rows = report_rows(out)
    assert rows[0] == ["row", "field", "reason"]
    assert [(row, field) for row, field, _ in rows[1:]] == [
        ("3", "email"), ("4", "external_id"), ("5", "")]
    assert "also on line 2" in rows[2][2]
    assert "fields where the header has 8" in rows[3][2]
    assert "Ben" not in out.read_text()
