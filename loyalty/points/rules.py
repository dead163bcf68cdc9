"""Earning rules in the database: immutable versions, the newest one in force.

A version never changes once written, so a ``RuleBook`` keeps the versions it has read; which
version is current comes with every ledger read, so a change made by staff applies to the next
purchase on every instance without any cache to invalidate.

A change made by a person is checked twice before it is written: no purchase may earn more
than ``loyalty.points.earning`` allows a rule set, and a change that multiplies what the last
purchases earn by more than the programme's factor must be confirmed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from fractions import Fraction
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
import msgspec.inspect as mi

import schemas.base
from loyalty.core.db import Connection
from loyalty.core.errors import Conflict, InvalidInput, NotFound
from loyalty.core.programme import Programme
from loyalty.core.settings import Settings
from loyalty.points.earning import (
    PurchaseFacts,
    check_points_in_range,
    purchase_points,
    simulate,
)
from schemas.base import decode_edge
from schemas.points import PurchaseLine, Simulation, SimulationResult
from schemas.rules import EarningRules, RuleSet, Tier, TierProgramme


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
            rules = self._versions[version] = stored_rules(raw)
        return version, rules


def stored_rules(raw: Any) -> EarningRules:
    """A version as it was saved. One saved before the bounds of ``schemas.rules`` were
    tightened may exceed them: it is read as it is, not refused (every purchase would fail),
    and the programme's ceiling keeps what it earns in range."""
    try:
        return msgspec.convert(raw, EarningRules, dec_hook=decode_edge)
    except msgspec.ValidationError:
        rules: EarningRules = _unbounded(raw, mi.type_info(EarningRules))
        return rules


async def current_rules(conn: Connection) -> RuleSet:
    await ensure_default_rules(conn)
    row = await conn.fetchrow(
        "select version, rules, created_at from earning_rule_versions"
        " order by version desc limit 1")
    assert row is not None
    return _rule_set(row)


async def rule_history(conn: Connection) -> list[RuleSet]:
    await ensure_default_rules(conn)
    rows = await conn.fetch(
        "select version, rules, created_at from earning_rule_versions order by version desc")
    return [_rule_set(row) for row in rows]


@dataclass(frozen=True)
class RuleVersionMade:
    """Who made a version and when: the e-mail of the staff account (None for the defaults a
    fresh install writes, or a version written by a job or the CLI)."""

    version: int
    created_at: dt.datetime
    created_by: str | None


async def rule_version_authors(conn: Connection) -> list[RuleVersionMade]:
    """Every version's maker and time, newest first (the history ``rule_history`` reads)."""
    await ensure_default_rules(conn)
    rows = await conn.fetch(
        """
        select v.version, v.created_at, s.email as created_by
          from earning_rule_versions v left join staff s on s.staff_id = v.created_by
         order by v.version desc
        """)
    return [RuleVersionMade(row["version"], row["created_at"], row["created_by"])
            for row in rows]


async def simulate_earning(conn: Connection, simulation: Simulation, programme: Programme,
                           now: dt.datetime) -> SimulationResult:
    """What a purchase or an action would earn under the current rules, or under the rules
    the simulation carries (checked as a change would be, and traced as version 0)."""
    if simulation.rules is not None:
        check_points_in_range(simulation.rules)
        version, rules = 0, simulation.rules
    else:
        current = await current_rules(conn)
        version, rules = current.version, current.rules
    return simulate(rules, version, simulation, programme, now)


def _rule_set(row: asyncpg.Record) -> RuleSet:
    return RuleSet(version=row["version"], rules=stored_rules(row["rules"]),
                   created_at=row["created_at"])


@dataclass(frozen=True)
class RuleChangePolicy:
    """What a person's change of the rules is held to: the programme's ceiling per purchase
    and time zone (to re-earn the sample as the till would) and the factor that needs a
    confirmation."""

    timezone: ZoneInfo
    max_points_per_purchase: int
    confirm_factor: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RuleChangePolicy:
        return cls(timezone=ZoneInfo(settings.timezone),
                   max_points_per_purchase=settings.max_points_per_purchase,
                   confirm_factor=settings.rule_change_confirm_factor)


async def replace_rules(
    conn: Connection, rules: EarningRules, *, staff_id: UUID | None, confirmed: bool,
    policy: RuleChangePolicy,
) -> RuleSet:
    """A new version made by a person: refused if a purchase could earn out of range under it,
    or if it multiplies what recent purchases earn by more than the policy's factor and is not
    ``confirmed``."""
    check_points_in_range(rules)
    if not confirmed:
        current = await current_rules(conn)
        effect = await rule_change_effect(conn, current.rules, rules, policy)
        if effect.multiplies_by_more_than(policy.confirm_factor):
            raise InvalidInput(effect.explain(policy.confirm_factor), field="confirm",
                               code="rule_change_needs_confirmation")
    return await save_rules(conn, rules, staff_id=staff_id)


async def save_rules(conn: Connection, rules: EarningRules, *, staff_id: UUID | None) -> RuleSet:
    """A new version, in force from the next ledger read; the old ones stay for history."""
    check_points_in_range(rules)
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
    return _rule_set(row)


# -- what a change does to recent purchases ---------------------------------------------------

# The sample: the purchases recorded last (their ids are uuid7, in the order they were
# recorded), at most this many and this many lines in all, so that re-earning them twice stays
# well under a second. Imported purchases have no lines to earn on and are left out.
SAMPLE_PURCHASES = 100
SAMPLE_LINES = 2_000

_SAMPLE = """
select p.occurred_at, s.code as store_code, p.total, p.lines, p.points_redeemed,
       m.birth_date, b.tier
  from (select * from purchases order by purchase_id desc limit $1) p
  join stores s on s.store_id = p.store_id
  join members m on m.member_id = p.member_id
  left join point_balances b on b.member_id = p.member_id
 where jsonb_array_length(p.lines) > 0
 order by p.purchase_id desc
 limit $2
"""


@dataclass(frozen=True)
class RuleChangeEffect:
    """Points the sample of recent purchases earns under the rules in force, and would earn
    under the new ones (first-purchase and birthday bonuses, campaigns and coupons aside)."""

    purchases: int
    before: int
    after: int

    def multiplies_by_more_than(self, factor: float) -> bool:
        return self.after > self.before * Fraction(factor)

    def explain(self, factor: float) -> str:
        change = (f"earned {self.before} points and would earn {self.after} under these rules"
                  f" ({_times(Fraction(self.after, self.before))})" if self.before else
                  f"earned no points and would earn {self.after} under these rules")
        return (f"the last {self.purchases} purchases {change}, more than the ×{factor:g} a "
                "change may make without a confirmation: check the rules, then send them "
                'again with "confirm": true to apply them')


async def rule_change_effect(
    conn: Connection, before: EarningRules, after: EarningRules, policy: RuleChangePolicy,
) -> RuleChangeEffect:
    """Re-earn the sample under both rule sets with the till's engine and ceiling."""
    rows = await conn.fetch(_SAMPLE, SAMPLE_PURCHASES * 10, SAMPLE_PURCHASES)
    purchases = lines_seen = points_before = points_after = 0
    for row in rows:
        try:
            lines = msgspec.convert(row["lines"], list[PurchaseLine])
        except msgspec.ValidationError:
            continue  # recorded under older bounds: not what a till sends today
        if purchases and lines_seen + len(lines) > SAMPLE_LINES:
            break
        occurred_at: dt.datetime = row["occurred_at"]
        facts = PurchaseFacts(
            occurred_at=occurred_at, store_code=row["store_code"], total=row["total"],
            lines=lines, redeem_points=row["points_redeemed"], birth_date=row["birth_date"],
            # Fixed bonuses do not multiply: counted as given, under both rule sets.
            birthday_bonus_year=occurred_at.astimezone(policy.timezone).year)
        points_before += _earn(before, facts, row["tier"], policy)
        points_after += _earn(after, facts, row["tier"], policy)
        purchases += 1
        lines_seen += len(lines)
    return RuleChangeEffect(purchases, points_before, points_after)


def _earn(rules: EarningRules, facts: PurchaseFacts, tier: str | None,
          policy: RuleChangePolicy) -> int:
    facts = dataclasses.replace(facts, tier=_sample_tier(rules.tiers, tier))
    return purchase_points(rules, 0, facts, policy.timezone,
                           ceiling=policy.max_points_per_purchase).points


def _sample_tier(tiers: TierProgramme, code: str | None) -> Tier | None:
    """The member's tier under ``tiers``: theirs if it has it, else a level every member
    reaches at their next purchase (threshold 0)."""
    levels = tiers.levels
    return next((level for level in levels if level.code == code), None) or (
        levels[0] if levels and levels[0].threshold == 0 else None)


def _times(ratio: Fraction) -> str:
    return f"×{float(ratio):,.0f}" if ratio >= 10 else f"×{float(ratio):.1f}"


# -- reading versions saved under older bounds ------------------------------------------------


def _unbounded(value: Any, kind: mi.Type) -> Any:
    """JSON data as ``kind`` with the types checked as msgspec would, but not the bounds on
    numbers and lengths (checked when the data was saved, under the bounds of the day)."""
    match kind:
        case mi.StructType(cls=cls, fields=fields):
            by_key = {field.encode_name: field for field in fields}
            return cls(**{by_key[key].name: _unbounded(item, by_key[key].type)
                          for key, item in value.items() if key in by_key})
        case mi.ListType(item_type=item_type):
            return [_unbounded(item, item_type) for item in value]
        case mi.DictType(value_type=value_type):
            return {key: _unbounded(item, value_type) for key, item in value.items()}
        case mi.UnionType(types=types):
            fitting = [t for t in types if _fits(value, t)]
            if not fitting:
                raise msgspec.ValidationError(f"a stored rules version holds {value!r}")
            return _unbounded(value, fitting[0])
        case mi.DateTimeType() | mi.CustomType(cls=schemas.base.Instant):
            return msgspec.convert(value, dt.datetime)
        case mi.TimeType():
            return msgspec.convert(value, dt.time)
        case mi.DateType():
            return msgspec.convert(value, dt.date)
        case mi.UUIDType():
            return msgspec.convert(value, UUID)
        case mi.NoneType() | mi.BoolType() | mi.IntType() | mi.FloatType() | mi.StrType() | \
                mi.LiteralType():
            return value
    raise msgspec.ValidationError(f"a stored rules version holds a {kind!r}")


def _fits(value: Any, kind: mi.Type) -> bool:
    if isinstance(kind, mi.NoneType):
        return value is None
    if isinstance(kind, mi.StructType):
        return isinstance(value, dict) and (
            kind.tag_field is None or value.get(kind.tag_field) == kind.tag)
    return value is not None
