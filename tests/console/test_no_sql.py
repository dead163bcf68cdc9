"""The console holds no SQL and no queries of its own: its handlers call the loyalty/ functions
the API calls (issue 14). Checked on the source: no SQL text in any console module, and no call
of a connection's query methods."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import console

CONSOLE = Path(console.__file__).parent
QUERY_METHODS = {"execute", "executemany", "fetch", "fetchrow", "fetchval", "copy_records_to_table",
                 "copy_to_table", "cursor", "prepare"}
# What only SQL says: a write's opening words, a table or index made, a query reading a table
# (select ... from <name> followed by a clause or the end), or a numbered parameter.
SQL = re.compile(
    r"\b(insert\s+into|delete\s+from|update\s+\w+\s+set|create\s+(table|index))\b"
    r"|\bselect\b[^.]*?\bfrom\s+\w+\s*(where|join|group|order|limit|;|\)|$)"
    r"|\$\d", re.IGNORECASE | re.MULTILINE)


def _modules() -> list[Path]:
    return sorted(CONSOLE.rglob("*.py"))


def test_there_are_console_modules_to_check() -> None:
    assert len(_modules()) >= 5


def test_no_console_module_holds_sql_text() -> None:
    found = [
        f"{path.relative_to(CONSOLE)}:{node.lineno}"
        for path in _modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and SQL.search(node.value)
    ]
    assert found == []


def test_no_console_module_queries_a_connection() -> None:
    found = [
        f"{path.relative_to(CONSOLE)}:{node.lineno} .{node.func.attr}()"
        for path in _modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr in QUERY_METHODS
    ]
    assert found == []


def test_the_check_sees_sql_where_there_is_some() -> None:
    """The pattern catches the statements it is for and leaves prose alone."""
    assert SQL.search("select count(*) from members")
    assert SQL.search("\n  insert into outbox (type) values ($1)")
    assert SQL.search("update members set status = 'x'")
    assert SQL.search("select m.name from members m where m.member_id = $1")
    assert not SQL.search("Select a segment from the list.")
    assert not SQL.search("Choose members from Tokyo, then update the count.")
    assert not SQL.search("Members")
