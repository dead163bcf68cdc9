"""Segment definitions, pure: what the wire accepts, what the compiler refuses, and SQL built only
from constant text and slots, whatever the values."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty.core.errors import InvalidInput
from loyalty.members.filter import SEGMENTABLE, SLOT, MemberFilter
from loyalty.promotions.segments import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    check_definition,
    compile_definition,
)
from schemas.base import decode_edge, json_encoder
from schemas.segments import (
    AllOf,
    AnyOf,
    AtRiskCondition,
    AttributeAtLeast,
    AttributeAtMost,
    AttributeCondition,
    AttributeDiffers,
    AttributeEquals,
    AttributeExists,
    AttributeGreater,
    AttributeIn,
    AttributeLess,
    AttributeMissing,
    ChurnRiskCondition,
    Condition,
    ConsentCondition,
    JoinedCondition,
    LastActivityCondition,
    Not,
    PurchaseCountCondition,
    RfmCondition,
    SegmentCreate,
    SpendCondition,
    StatusCondition,
    StoresCondition,
    TierCondition,
    VerifiedCondition,
)
from tests.factories import instant

NOW = dt.datetime(2026, 6, 1, 3, 0, tzinfo=dt.UTC)
HOSTILE = "x'); drop table members; --"
# As the API decodes them: with the bounded dates and times of schemas.base.
decode = msgspec.json.Decoder(Condition, dec_hook=decode_edge).decode


def strings_in(value: Any) -> list[str]:
    """Every string a definition carries as a value (codes, keys, attribute values); statuses
    are left out, since the constant text names the statuses a segment may match at all, and so
    are contact channels, each of which is a column of its own (``email_verified_at``)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, msgspec.Struct):
        return [s for name in value.__struct_fields__ if name not in ("statuses", "channel")
                for s in strings_in(getattr(value, name))]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return []


def assert_parameterised(definition: Condition) -> MemberFilter:
    compiled = compile_definition(definition, now=NOW)
    assert compiled.sql.count(SLOT) == len(compiled.params)
    for text in strings_in(definition):
        assert text not in compiled.sql, text
    rendered = compiled.render(4)
    assert SLOT not in rendered
    numbers = [int(n) for n in re.findall(r"\$(\d+)", rendered)]
    assert numbers == list(range(4, 4 + len(compiled.params)))
    return compiled


# -- one of each condition -------------------------------------------------------------------

EVERY_CONDITION: list[Condition] = [
    StatusCondition(statuses=["active", "dormant"]),
    TierCondition(codes=["GOLD", "SILVER"]),
    TierCondition(no_tier=True),
    TierCondition(codes=["GOLD"], no_tier=True),
    JoinedCondition(after=instant(NOW - dt.timedelta(days=400)), before=instant(NOW)),
    JoinedCondition(within_days=30, more_than_days_ago=7),
    LastActivityCondition(more_than_days_ago=180),
    SpendCondition(days=90, at_least=10_000),
    SpendCondition(days=90, at_most=5_000),
    SpendCondition(days=90, at_least=1_000, at_most=5_000),
    PurchaseCountCondition(days=30, at_least=2, at_most=2),
    RfmCondition(recency=[5, 4], monetary=[5]),
    RfmCondition(),
    AtRiskCondition(),
    AtRiskCondition(flagged=False),
    ChurnRiskCondition(p_alive_below=0.3),
    AttributeCondition(key="city", test=AttributeEquals(value=HOSTILE)),
    AttributeCondition(key="city", test=AttributeDiffers(value=HOSTILE)),
    AttributeCondition(key="city", test=AttributeIn(values=[HOSTILE, 3, None, True])),
    AttributeCondition(key="city", test=AttributeExists()),
    AttributeCondition(key="city", test=AttributeMissing()),
    AttributeCondition(key="age", test=AttributeGreater(value=30)),
    AttributeCondition(key="age", test=AttributeAtLeast(value=30.5)),
    AttributeCondition(key="age", test=AttributeLess(value=-1)),
    AttributeCondition(key="age", test=AttributeAtMost(value=0)),
    ConsentCondition(purpose="marketing_email"),
    ConsentCondition(purpose="push", granted=False),
    VerifiedCondition(channel="email"),
    VerifiedCondition(channel="phone", verified=False),
    StoresCondition(codes=["TOKYO-1", "OSAKA-2"]),
    StoresCondition(codes=["TOKYO-1"], within_days=30),
    AllOf(conditions=[StatusCondition(statuses=["active"]), ConsentCondition(purpose="push")]),
    AnyOf(conditions=[StatusCondition(statuses=["active"]), ConsentCondition(purpose="push")]),
    Not(condition=StatusCondition(statuses=["suspended"])),
]


@pytest.mark.parametrize("definition", EVERY_CONDITION, ids=lambda d: type(d).__name__)
def test_every_condition_compiles_to_slots_with_its_values_as_parameters(
    definition: Condition,
) -> None:
    compiled = assert_parameterised(definition)
    # Erased and merged members never match, whatever the definition says.
    assert compiled.sql.startswith(f"({SEGMENTABLE.sql}) and (")


def test_every_condition_type_has_a_case_above() -> None:
    tagged = {cls.__struct_config__.tag for cls in Condition.__args__}
    covered = {type(d).__struct_config__.tag for d in EVERY_CONDITION}
    assert covered == tagged


def test_values_travel_as_parameters_in_order() -> None:
    definition = AllOf(conditions=[
        StoresCondition(codes=["S-1"], within_days=30),
        AttributeCondition(key="rank", test=AttributeEquals(value="A")),
        SpendCondition(days=10, at_least=100, at_most=200),
    ])
    compiled = compile_definition(definition, now=NOW)
    assert compiled.params == (
        ["S-1"], NOW - dt.timedelta(days=30), NOW,
        "rank", '"A"',
        NOW - dt.timedelta(days=10), NOW, 100, 200,
    )


def test_relative_conditions_count_back_from_the_time_of_use() -> None:
    definition = LastActivityCondition(within_days=30, more_than_days_ago=7)
    later = NOW + dt.timedelta(days=1)
    assert compile_definition(definition, now=NOW).params == (
        NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=7))
    assert compile_definition(definition, now=later).params == (
        later - dt.timedelta(days=30), later - dt.timedelta(days=7))


def test_not_negates_the_condition_but_never_the_segmentable_statuses() -> None:
    compiled = compile_definition(Not(condition=ConsentCondition(purpose="push")), now=NOW)
    assert compiled.sql.startswith(f"({SEGMENTABLE.sql}) and (not (")
    assert compiled.sql.count(SEGMENTABLE.sql) == 1


def test_attribute_values_are_compared_as_typed_json() -> None:
    def params(value: Any) -> tuple[Any, ...]:
        return compile_definition(
            AttributeCondition(key="age", test=AttributeEquals(value=value)), now=NOW).params

    assert params("34") == ("age", '"34"')
    assert params(34) == ("age", "34")
    assert params(True) == ("age", "true")
    assert params(None) == ("age", "null")


# -- any definition, any values --------------------------------------------------------------

# Strings from the whole of Unicode that cannot occur in the SQL's constant text by chance.
values = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1,
                 max_size=20).map(lambda s: "\u2603" + s)
codes = st.from_regex(r"\AZZ[A-Z0-9_-]{0,10}\Z")
keys = st.from_regex(r"\Azz[a-z0-9_.-]{0,10}\Z")
days = st.integers(1, 3650)
scores = st.none() | st.lists(st.integers(1, 5), min_size=1, max_size=5)
# Numbers a stored definition keeps exactly (schemas.base.SafeFloat).
numbers = st.integers(-(2**53), 2**53) | st.floats(-(2**53), 2**53, allow_nan=False)
scalars = values | numbers | st.booleans() | st.none()
instants = st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2040, 1, 1),
                        timezones=st.just(dt.UTC)).map(instant)


def _range(bound: int) -> st.SearchStrategy[tuple[int | None, int | None]]:
    def ordered(pair: tuple[int, int], which: int) -> tuple[int | None, int | None]:
        low, high = sorted(pair)
        return ((low, high), (low, None), (None, high))[which]

    return st.builds(ordered, st.tuples(st.integers(0, bound), st.integers(0, bound)),
                     st.integers(0, 2))


@st.composite
def when(draw: st.DrawFn, kind: type[JoinedCondition | LastActivityCondition]) -> Condition:
    after, before = sorted(draw(st.lists(instants, min_size=2, max_size=2, unique=True)))
    near, far = sorted(draw(st.lists(days, min_size=2, max_size=2, unique=True)))
    fields = draw(st.lists(st.sampled_from(["after", "before", "within", "more"]), min_size=1,
                           unique=True))
    return kind(after=after if "after" in fields else None,
                before=before if "before" in fields else None,
                within_days=far if "within" in fields else None,
                more_than_days_ago=near if "more" in fields else None)


tests = st.one_of(
    st.builds(AttributeEquals, value=scalars), st.builds(AttributeDiffers, value=scalars),
    st.builds(AttributeIn, values=st.lists(scalars, min_size=1, max_size=5)),
    st.builds(AttributeExists), st.builds(AttributeMissing),
    st.builds(AttributeGreater, value=numbers), st.builds(AttributeAtLeast, value=numbers),
    st.builds(AttributeLess, value=numbers), st.builds(AttributeAtMost, value=numbers),
)
leaves = st.one_of(
    st.builds(StatusCondition, statuses=st.lists(
        st.sampled_from(["active", "dormant", "suspended"]), min_size=1, max_size=3)),
    st.builds(TierCondition, codes=st.lists(codes, min_size=1, max_size=3),
              no_tier=st.booleans()),
    st.builds(TierCondition, codes=st.just([]), no_tier=st.just(True)),
    when(JoinedCondition), when(LastActivityCondition),
    _range(10**9).flatmap(lambda r: st.builds(SpendCondition, days=days, at_least=st.just(r[0]),
                                              at_most=st.just(r[1]))),
    _range(1000).flatmap(lambda r: st.builds(PurchaseCountCondition, days=days,
                                             at_least=st.just(r[0]), at_most=st.just(r[1]))),
    st.builds(RfmCondition, recency=scores, frequency=scores, monetary=scores),
    st.builds(AtRiskCondition, flagged=st.booleans()),
    st.builds(ChurnRiskCondition, p_alive_below=st.sampled_from([0.05, 0.3, 1.0])),
    st.builds(AttributeCondition, key=keys, test=tests),
    st.builds(ConsentCondition, purpose=st.sampled_from(["marketing_email", "push",
                                                         "data_analysis"]),
              granted=st.booleans()),
    st.builds(VerifiedCondition, channel=st.sampled_from(["email", "phone"]),
              verified=st.booleans()),
    st.builds(StoresCondition, codes=st.lists(codes, min_size=1, max_size=3),
              within_days=st.none() | days),
)
definitions = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(AllOf, conditions=st.lists(inner, min_size=1, max_size=4)),
        st.builds(AnyOf, conditions=st.lists(inner, min_size=1, max_size=4)),
        st.builds(Not, condition=inner),
    ),
    max_leaves=12,
)


def size_and_depth(node: Condition) -> tuple[int, int]:
    match node:
        case AllOf(conditions=children) | AnyOf(conditions=children):
            measured = [size_and_depth(c) for c in children]
            return 1 + sum(s for s, _ in measured), 1 + max(d for _, d in measured)
        case Not(condition=child):
            size, depth = size_and_depth(child)
            return size + 1, depth + 1
    return 1, 1


@settings(max_examples=200, deadline=None)
@given(definitions)
def test_any_definition_within_bounds_compiles_without_a_value_in_its_sql(
    definition: Condition,
) -> None:
    size, depth = size_and_depth(definition)
    if size > MAX_CONDITIONS or depth > MAX_DEPTH:
        with pytest.raises(InvalidInput) as refused:
            compile_definition(definition, now=NOW)
        assert refused.value.code == "segment_too_complex"
        return
    assert_parameterised(definition)
    # What crosses the wire (encoded as the service encodes it) comes back the same.
    assert decode(json_encoder.encode(definition)) == definition


def test_the_sql_depends_on_the_shape_of_a_definition_never_on_its_values() -> None:
    def shaped(code: str, key: str, value: str, at_least: int) -> Condition:
        return AnyOf(conditions=[
            TierCondition(codes=[code]), StoresCondition(codes=[code], within_days=at_least),
            AttributeCondition(key=key, test=AttributeIn(values=[value, at_least])),
            Not(condition=SpendCondition(days=at_least, at_least=at_least)),
        ])

    one = compile_definition(shaped("GOLD", "city", "Tokyo", 5), now=NOW)
    other = compile_definition(shaped("X'--", "a.b", HOSTILE, 3000), now=NOW)
    assert one.sql == other.sql
    assert one.params != other.params


# -- bounds and contradictions ---------------------------------------------------------------


def nested(depth: int) -> Condition:
    node: Condition = StatusCondition(statuses=["active"])
    for _ in range(depth - 1):
        node = Not(condition=node)
    return node


def test_nesting_is_bounded() -> None:
    compile_definition(nested(MAX_DEPTH), now=NOW)
    with pytest.raises(InvalidInput) as refused:
        compile_definition(nested(MAX_DEPTH + 1), now=NOW)
    assert refused.value.code == "segment_too_complex"


def test_a_tree_far_too_deep_is_refused_without_recursing() -> None:
    with pytest.raises(InvalidInput) as refused:
        check_definition(nested(100_000))
    assert refused.value.code == "segment_too_complex"


def test_the_number_of_conditions_is_bounded() -> None:
    leaf = StatusCondition(statuses=["active"])
    compile_definition(AllOf(conditions=[leaf] * (MAX_CONDITIONS - 1)), now=NOW)
    wide = AllOf(conditions=[AllOf(conditions=[leaf] * 30), AllOf(conditions=[leaf] * 30)])
    with pytest.raises(InvalidInput) as refused:
        compile_definition(wide, now=NOW)
    assert refused.value.code == "segment_too_complex"


@pytest.mark.parametrize(("definition", "code", "field"), [
    (SpendCondition(days=30, at_least=5_001, at_most=5_000), "contradictory_condition",
     "definition"),
    (PurchaseCountCondition(days=30, at_least=3, at_most=2), "contradictory_condition",
     "definition"),
    (JoinedCondition(after=instant(NOW), before=instant(NOW)), "contradictory_condition",
     "definition"),
    (LastActivityCondition(within_days=30, more_than_days_ago=30), "contradictory_condition",
     "definition"),
    (AllOf(conditions=[StatusCondition(statuses=["active"]), TierCondition()]),
     "incomplete_condition", "definition.conditions[1]"),
    (Not(condition=SpendCondition(days=30)), "incomplete_condition", "definition.condition"),
    (PurchaseCountCondition(days=30), "incomplete_condition", "definition"),
    (JoinedCondition(), "incomplete_condition", "definition"),
])
def test_conditions_that_say_nothing_or_can_never_match_are_refused(
    definition: Condition, code: str, field: str,
) -> None:
    with pytest.raises(InvalidInput) as refused:
        compile_definition(definition, now=NOW)
    assert (refused.value.code, refused.value.field) == (code, field)


# -- the wire --------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    b'{"type": "status", "statuses": []}',
    b'{"type": "status", "statuses": ["erased"]}',
    b'{"type": "stores", "codes": []}',
    b'{"type": "all", "conditions": []}',
    b'{"type": "any", "conditions": []}',
    b'{"type": "rfm", "recency": []}',
    b'{"type": "rfm", "recency": [6]}',
    b'{"type": "attribute", "key": "a", "test": {"op": "in", "values": []}}',
    b'{"type": "attribute", "key": "a\'; drop table members; --", "test": {"op": "exists"}}',
    b'{"type": "attribute", "key": "age", "test": {"op": "gt", "value": "30"}}',
    b'{"type": "attribute", "key": "age", "test": {"op": "gt", "value": true}}',
    b'{"type": "attribute", "key": "age", "test": {"op": "eq"}}',
    b'{"type": "attribute", "key": "age", "test": {"op": "like", "value": "%"}}',
    b'{"type": "attribute", "key": "age", "test": {"op": "eq", "value": 1e400}}',
    b'{"type": "attribute", "key": "age", "test": {"op": "eq", "value": [1]}}',
    b'{"type": "tier", "codes": ["GOLD\'; drop table members; --"]}',
    b'{"type": "stores", "codes": ["S1\' or \'1\'=\'1"]}',
    b'{"type": "consent", "purpose": "marketing_email\' or true --"}',
    b'{"type": "joined", "after": "2026-01-01T00:00:00"}',
    b'{"type": "spend", "days": 0, "at_least": 1}',
    b'{"type": "spend", "days": 30, "at_least": -1}',
    b'{"type": "status", "statuses": ["active"], "sql": "true"}',
    b'{"type": "raw", "sql": "true"}',
    b'{"statuses": ["active"]}',
])
def test_the_wire_refuses_what_no_definition_may_hold(body: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode(body)


def test_a_definition_decodes_from_json_and_encodes_without_its_defaults() -> None:
    body = (b'{"name": "Lapsed Tokyo fans", "definition": {"type": "all", "conditions": ['
            b'{"type": "last_activity", "more_than_days_ago": 90},'
            b'{"type": "attribute", "key": "city", "test": {"op": "eq", "value": "Tokyo"}},'
            b'{"type": "not", "condition": {"type": "consent", "purpose": "push",'
            b' "granted": false}}]}}')
    created = msgspec.json.decode(body, type=SegmentCreate, dec_hook=decode_edge)
    assert created.definition == AllOf(conditions=[
        LastActivityCondition(more_than_days_ago=90),
        AttributeCondition(key="city", test=AttributeEquals(value="Tokyo")),
        Not(condition=ConsentCondition(purpose="push", granted=False)),
    ])
    assert msgspec.json.decode(msgspec.json.encode(created.definition)) == {
        "type": "all", "conditions": [
            {"type": "last_activity", "more_than_days_ago": 90},
            {"type": "attribute", "key": "city", "test": {"op": "eq", "value": "Tokyo"}},
            {"type": "not", "condition": {"type": "consent", "purpose": "push",
                                          "granted": False}},
        ]}
