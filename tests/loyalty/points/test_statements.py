"""The ledger's statements as built at import: every parameter named and numbered, the
optimistic and the locked form of each posting asking for the same values."""

from __future__ import annotations

import re

import pytest

from loyalty.core.sql import Statement
from loyalty.points import actions, adjustments, groups, ledger, purchases, returns
from loyalty.points.ledger import POSTING, PostingStatement

POSTINGS = {
    "plain": POSTING,
    "purchase": purchases.PURCHASE_POSTING,
    "purchase with coupons": purchases.PURCHASE_WITH_COUPONS_POSTING,
    "return": returns.RETURN_POSTING,
    "action": actions.ACTION_POSTING,
    "adjustment": adjustments.ADJUSTMENT_POSTING,
}


def _numbered_only(statement: Statement) -> None:
    # No name left untranslated, no placeholder left unformatted, every number asked for.
    assert not re.search(r"(?<![:\w]):[A-Za-z_]", statement.text)
    assert "{" not in statement.text.replace("'{}'", "")
    used = {int(n) for n in re.findall(r"\$(\d+)", statement.text)}
    assert used == set(range(1, len(statement.names) + 1))


@pytest.mark.parametrize("name", sorted(POSTINGS))
def test_a_posting_statement_is_numbered_once_in_both_forms(name: str) -> None:
    statement: PostingStatement = POSTINGS[name]
    _numbered_only(statement.optimistic)
    _numbered_only(statement.locked)
    assert set(statement.optimistic.names) == set(statement.locked.names)


def test_the_ledger_reads_are_numbered() -> None:
    for read in (ledger.LEDGER, returns.RETURN_READ, actions.ACTION_READ):
        _numbered_only(read.by_id)
        _numbered_only(read.by_number)


def test_the_group_commit_statement_is_numbered_once() -> None:
    _numbered_only(groups._GROUP)
