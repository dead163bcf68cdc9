"""Earning rules in the database: immutable versions, the newest one in force.

A version never changes once written, so a ``RuleBook`` keeps the versions it has read; which
version is current comes with every ledger read, so a change made by staff applies to the next
purchase on every instance without any cache to invalidate.
"""

from __future__ import annotations

from uuid import UUID

import asyncpg
import msgspec

from loyalty.db import Connection
from loyalty.errors import Conflict, NotFound
from schemas.base import decode_edge
from schemas.rules import EarningRules, RuleSet


def default_rules() -> EarningRules:
    """What a fresh install earns by: 1 point per 100 of the amount paid, engagement actions
    with daily caps, points valid for 12 months."""
    return EarningRules()


async def ensure_default_rules(conn: Connection) -> None:
    """Version 1 is the defaults; written once, by whichever process gets there first."""
    await conn.execute(
        "insert into earning_rule_versions (version, rules) values (1, $1) on conflict do nothing",
        default_rules(),
    )


class RuleBook:
    """The rule versions one database has, as far as this process has read them."""

    def __init__(self) -> None:
        self._versions: dict[int, EarningRules] = {}

    async def newest(self, conn: Connection) -> tuple[int, EarningRules]:
        """The newest version this process has seen (read from the database the first time):
        what a read that must guess the rules before it runs assumes; it then checks."""
        if not self._versions:
            return await self.at(conn, await conn.fetchval(
                "select coalesce(max(version), 0) from earning_rule_versions"))
        version = max(self._versions)
        return version, self._versions[version]

    async def at(self, conn: Connection, version: int) -> tuple[int, EarningRules]:
        """(version, rules). Version 0 means none is written yet: the defaults are, as 1."""
        if version == 0:
            await ensure_default_rules(conn)
            version = 1
        rules = self._versions.get(version)
        if rules is None:
            raw = await conn.fetchval(
                "select rules from earning_rule_versions where version = $1", version)
            if raw is None:
                raise NotFound(f"no earning rules version {version}")
            rules = self._versions[version] = msgspec.convert(raw, EarningRules,
                                                                dec_hook=decode_edge)
        return version, rules


async def current_rules(conn: Connection) -> RuleSet:
    await ensure_default_rules(conn)
    row = await conn.fetchrow(
        "select version, rules, created_at from earning_rule_versions"
        " order by version desc limit 1")
    assert row is not None
    return msgspec.convert(dict(row), RuleSet, dec_hook=decode_edge)


async def rule_history(conn: Connection) -> list[RuleSet]:
    await ensure_default_rules(conn)
    rows = await conn.fetch(
        "select version, rules, created_at from earning_rule_versions order by version desc")
    return [msgspec.convert(dict(row), RuleSet, dec_hook=decode_edge) for row in rows]


async def save_rules(conn: Connection, rules: EarningRules, *, staff_id: UUID | None) -> RuleSet:
    """A new version, in force from the next ledger read; the old ones stay for history."""
    await ensure_default_rules(conn)
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                """
                insert into earning_rule_versions (version, rules, created_by)
                select max(version) + 1, $1, $2 from earning_rule_versions
                returning version, rules, created_at
                """,
                rules, staff_id,
            )
    except asyncpg.UniqueViolationError:
        raise Conflict("the earning rules were changed at the same time; read them and retry",
                       code="rules_changed") from None
    assert row is not None
    return msgspec.convert(dict(row), RuleSet, dec_hook=decode_edge)
