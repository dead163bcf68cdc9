"""Segments: the saved segments, and a builder over every condition a definition may hold
(schemas/segments.py) with a live count, through the functions behind /v1/segments
(loyalty.promotions.segments). As the API: analysts build and count (no member shown), only
admins and marketers save, and the sample of members goes to IDENTIFIER_READERS only.

The builder is one flat list of conditions joined by "all" or "any", each of which may be
negated: the top of every definition the form writes is an ``all`` or ``any`` node whose
children are conditions or ``not`` conditions. A saved definition nested deeper (written
through the API) is shown with its count, not rebuilt: it is changed through the API."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Annotated, Any
from uuid import UUID
from zoneinfo import ZoneInfo

import msgspec
from babel.numbers import get_currency_precision
from litestar import Response, get, post
from litestar.datastructures import FormMultiDict
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect

from console.pages import render, staff_session
from console.services import AnyRequest, services
from console.session import ConsoleSession, check_csrf
from loyalty.access.audit import record_audit
from loyalty.access.roles import IDENTIFIER_READERS, MARKETING_EDITORS, MARKETING_READERS
from loyalty.core.db import transaction
from loyalty.core.errors import InvalidInput
from loyalty.promotions.segments import (
    CountEstimate,
    check_definition,
    create_segment,
    estimate_segment,
    get_segment,
    list_segments,
    member_rows,
    preview_segment,
    update_segment,
)
from schemas.base import decode_edge, json_encoder, whole
from schemas.segments import (
    AllOf,
    AnyOf,
    Condition,
    Not,
    SampleMember,
    Segment,
    SegmentCreate,
    SegmentUpdate,
)

PAGE_SIZE = 25
SAMPLE_SIZE = 10
# As the definition's own bound (loyalty.promotions.segments.MAX_CONDITIONS), less the node
# that joins them.
MAX_ROWS = 49
Cursor = Annotated[str | None, QueryParameter(max_length=200,
                                              pattern=whole(r"[A-Za-z0-9_-]*"))]

# Every condition type the definition supports, in the builder's order; the template names
# each through the catalogue (KIND_LABELS).
KINDS = ("status", "tier", "joined", "last_activity", "spend", "purchase_count", "rfm",
         "at_risk", "churn_risk", "attribute", "consent", "verified", "stores")
KIND_LABELS = {
    "status": "Member status",
    "tier": "Tier",
    "joined": "Joined",
    "last_activity": "Last activity",
    "spend": "Amount spent",
    "purchase_count": "Number of purchases",
    "rfm": "RFM scores",
    "at_risk": "At risk of leaving",
    "churn_risk": "Churn model",
    "attribute": "Member attribute",
    "consent": "Consent",
    "verified": "Verified contact",
    "stores": "Bought at stores",
}
# Per kind: the fields typed in one box, and the fields ticked (checkboxes, several values).
TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "status": (), "tier": ("codes",),
    "joined": ("after", "before", "within_days", "more_than_days_ago"),
    "last_activity": ("after", "before", "within_days", "more_than_days_ago"),
    "spend": ("days", "at_least", "at_most"), "purchase_count": ("days", "at_least", "at_most"),
    "rfm": (), "at_risk": ("flagged",), "churn_risk": ("p_alive_below",),
    "attribute": ("key", "op", "kind", "value"), "consent": ("purpose", "granted"),
    "verified": ("channel", "verified"), "stores": ("codes", "within_days"),
}
PICK_FIELDS: dict[str, tuple[str, ...]] = {
    "status": ("statuses",), "tier": ("no_tier",), "rfm": ("recency", "frequency", "monetary"),
}
# A new row starts as a condition that already counts, so the live count moves at once.
DEFAULTS: dict[str, tuple[dict[str, str], dict[str, list[str]]]] = {
    "status": ({}, {"statuses": ["active"]}),
    "tier": ({}, {"no_tier": ["true"]}),
    "joined": ({"within_days": "365"}, {}),
    "last_activity": ({"within_days": "90"}, {}),
    "spend": ({"days": "90", "at_least": "1"}, {}),
    "purchase_count": ({"days": "90", "at_least": "1"}, {}),
    "rfm": ({}, {"recency": ["4", "5"]}),
    "at_risk": ({"flagged": "true"}, {}),
    "churn_risk": ({"p_alive_below": "30"}, {}),
    "attribute": ({"op": "exists", "kind": "text"}, {}),
    "consent": ({"purpose": "marketing_email", "granted": "true"}, {}),
    "verified": ({"channel": "email", "verified": "true"}, {}),
    "stores": ({}, {}),
}
ATTRIBUTE_OPS = ("eq", "ne", "in", "exists", "not_exists", "gt", "gte", "lt", "lte")
NUMBER_OPS = ("gt", "gte", "lt", "lte")
# The console's own messages (the API's are shown as it words them); both catalogues hold them.
MESSAGES = (
    "Days, counts and amounts are whole numbers: correct this condition.",
    "Dates are written YYYY-MM-DD: correct this condition.",
    "This test compares numbers: enter a number, or choose another test.",
    "Choose a condition type from the list.",
    "Add at least one condition.",
    "A segment holds at most 49 conditions here: remove one before adding another.",
    "Give the segment a name.",
    "Enter how many days back to look.",
    "Enter a percentage above 0 and at most 100.",
)
_ROW = re.compile(r"c(\d{1,3})\.type")
# Only these go through the catalogue: any other message is shown as text, escaped.
OWN = frozenset(MESSAGES)


class FormProblem(Exception):
    """A row the form cannot turn into a condition: the message says what to correct."""


@dataclass
class Row:
    """One condition as the form shows it: what was typed, as typed."""

    kind: str
    negate: bool = False
    values: dict[str, str] = field(default_factory=dict)
    picks: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None

    def value(self, name: str) -> str:
        return self.values.get(name, "")

    def picked(self, name: str, value: str) -> bool:
        return value in self.picks.get(name, [])


@dataclass
class Builder:
    """The builder's state: name, description, how rows join, the rows, and what is wrong."""

    name: str = ""
    description: str = ""
    match: str = "all"
    rows: list[Row] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    # A saved definition the flat form cannot show (nested groups): kept as it is.
    nested: str | None = None


def new_row(kind: str) -> Row:
    values, picks = DEFAULTS[kind]
    return Row(kind, values=dict(values), picks={k: list(v) for k, v in picks.items()})


# -- the form to rows ------------------------------------------------------------------------


def read_form(form: FormMultiDict) -> Builder:
    """The builder as posted; a row of an unknown type is refused (InvalidInput)."""
    builder = Builder(name=str(form.get("name") or "").strip()[:200],
                      description=str(form.get("description") or "").strip()[:2000],
                      match="any" if form.get("match") == "any" else "all")
    indices = sorted({int(found.group(1)) for key in form
                      if (found := _ROW.fullmatch(key))})
    for index in indices[:MAX_ROWS + 1]:
        kind = str(form.get(f"c{index}.type") or "")
        if kind not in KINDS:
            raise InvalidInput("Choose a condition type from the list.", field="type")
        row = Row(kind, negate=form.get(f"c{index}.not") == "true")
        for name in TEXT_FIELDS[kind]:
            row.values[name] = str(form.get(f"c{index}.{name}") or "").strip()[:500]
        for name in PICK_FIELDS.get(kind, ()):
            row.picks[name] = [str(v)[:20] for v in form.getall(f"c{index}.{name}", [])][:10]
        builder.rows.append(row)
    return builder


def _whole(text: str) -> int | None:
    if not text:
        return None
    try:
        return int(text.replace(",", ""))
    except ValueError:
        raise FormProblem("Days, counts and amounts are whole numbers: correct this condition."
                          ) from None


def _midnight(text: str, tz: ZoneInfo) -> str | None:
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise FormProblem("Dates are written YYYY-MM-DD: correct this condition.") from None
    return dt.datetime.combine(day, dt.time(), tz).isoformat()


def _words(text: str) -> list[str]:
    return [word for word in re.split(r"[\s,、]+", text) if word]


def _scalar(text: str, kind: str) -> Any:
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            raise FormProblem("This test compares numbers: enter a number, or choose another "
                              "test.") from None
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "boolean":
        return text.lower() in ("true", "yes", "1", "はい")
    return text


def _share(text: str) -> float:
    """A percentage as typed (``30``, ``12.5``, ``30%``) as the share the API takes."""
    try:
        percent = float(text.strip().rstrip("%").replace(",", "."))
    except ValueError:
        raise FormProblem(MESSAGES[8]) from None
    if not 0 < percent <= 100:
        raise FormProblem(MESSAGES[8])
    return percent / 100


def _money(text: str, scale: int) -> int | None:
    amount = _whole(text)
    return None if amount is None else amount * scale


def row_condition(row: Row, *, tz: ZoneInfo, scale: int) -> Condition:
    """The condition a row says, checked as the API checks one; FormProblem or
    InvalidInput (the API's message) when it cannot be."""
    v = row.value
    data: dict[str, Any] = {"type": row.kind}
    if row.kind in ("spend", "purchase_count") and not v("days"):
        raise FormProblem(MESSAGES[7])
    match row.kind:
        case "status":
            data["statuses"] = row.picks.get("statuses", [])
        case "tier":
            data["codes"] = _words(v("codes"))
            data["no_tier"] = bool(row.picks.get("no_tier"))
        case "joined" | "last_activity":
            data |= {"after": _midnight(v("after"), tz), "before": _midnight(v("before"), tz),
                     "within_days": _whole(v("within_days")),
                     "more_than_days_ago": _whole(v("more_than_days_ago"))}
        case "spend":
            data |= {"days": _whole(v("days")), "at_least": _money(v("at_least"), scale),
                     "at_most": _money(v("at_most"), scale)}
        case "purchase_count":
            data |= {"days": _whole(v("days")), "at_least": _whole(v("at_least")),
                     "at_most": _whole(v("at_most"))}
        case "rfm":
            for name in ("recency", "frequency", "monetary"):
                picked = [_whole(score) for score in row.picks.get(name, [])]
                data[name] = picked or None
        case "at_risk":
            data["flagged"] = v("flagged") != "false"
        case "churn_risk":
            data["p_alive_below"] = _share(v("p_alive_below"))
        case "attribute":
            op = v("op") if v("op") in ATTRIBUTE_OPS else "eq"
            kind = "number" if op in NUMBER_OPS else v("kind")
            test: dict[str, Any] = {"op": op}
            if op == "in":
                test["values"] = [_scalar(word, kind) for word in _words(v("value"))]
            elif op not in ("exists", "not_exists"):
                test["value"] = _scalar(v("value"), kind)
            data |= {"key": v("key"), "test": test}
        case "consent":
            data |= {"purpose": v("purpose"), "granted": v("granted") != "false"}
        case "verified":
            data |= {"channel": v("channel"), "verified": v("verified") != "false"}
        case "stores":
            data |= {"codes": _words(v("codes")), "within_days": _whole(v("within_days"))}
    try:
        condition: Condition = msgspec.convert(data, Condition, dec_hook=decode_edge)
    except msgspec.ValidationError as exc:
        raise FormProblem(str(exc)) from None
    check_definition(condition)
    return Not(condition=condition) if row.negate else condition


def definition_of(builder: Builder, *, tz: ZoneInfo, scale: int) -> Condition | None:
    """The definition the rows say, or None with each wrong row's message set on it."""
    conditions: list[Condition] = []
    for row in builder.rows:
        row.error = None
        try:
            conditions.append(row_condition(row, tz=tz, scale=scale))
        except (FormProblem, InvalidInput) as exc:
            row.error = str(exc)
    if not builder.rows:
        builder.errors["conditions"] = "Add at least one condition."
    if any(row.error for row in builder.rows) or not conditions:
        return None
    return AnyOf(conditions=conditions) if builder.match == "any" else AllOf(
        conditions=conditions)


# -- a saved definition to rows --------------------------------------------------------------


def _row_of(condition: Condition, negate: bool, *, tz: ZoneInfo, scale: int) -> Row:
    data: dict[str, Any] = msgspec.json.decode(json_encoder.encode(condition))
    kind = data.pop("type")
    row = Row(kind, negate=negate)
    for name, value in data.items():
        if name in PICK_FIELDS.get(kind, ()):
            row.picks[name] = ["true"] if value is True else [str(v) for v in value or []]
        elif name in ("after", "before"):
            moment = msgspec.convert(value, dt.datetime)
            row.values[name] = moment.astimezone(tz).date().isoformat()
        elif name in ("at_least", "at_most") and kind == "spend":
            row.values[name] = str(value // scale)
        elif name == "p_alive_below":
            row.values[name] = f"{value * 100:g}"
        elif name == "codes":
            row.values[name] = ", ".join(value)
        elif name == "test":
            op = value["op"]
            found = value.get("values", [value.get("value")])
            row.values |= {"op": op, "value": ", ".join(
                "true" if v is True else "false" if v is False else str(v) for v in found
                if v is not None),
                "kind": "boolean" if any(isinstance(v, bool) for v in found) else
                "number" if any(isinstance(v, int | float) for v in found) else "text"}
        elif isinstance(value, bool):
            row.values[name] = "true" if value else "false"
        else:
            row.values[name] = "" if value is None else str(value)
    # Fields left out of a saved definition because they hold their default (true).
    defaulted = {"at_risk": "flagged", "consent": "granted", "verified": "verified"}
    if kind in defaulted:
        row.values.setdefault(defaulted[kind], "true")
    return row


def builder_of(segment: Segment, *, tz: ZoneInfo, scale: int) -> Builder:
    builder = Builder(name=segment.name, description=segment.description)
    definition = segment.definition
    children: list[Condition]
    match definition:
        case AllOf(conditions=children):
            builder.match = "all"
        case AnyOf(conditions=children):
            builder.match = "any"
        case _:
            children = [definition]
    for child in children:
        negate = isinstance(child, Not)
        inner = child.condition if isinstance(child, Not) else child
        if isinstance(inner, AllOf | AnyOf | Not):
            builder.rows = []
            builder.nested = json_encoder.encode(definition).decode()
            return builder
        builder.rows.append(_row_of(inner, negate, tz=tz, scale=scale))
    return builder


# -- handlers --------------------------------------------------------------------------------


def _units(request: AnyRequest) -> tuple[ZoneInfo, int]:
    settings = services(request).settings
    return ZoneInfo(settings.timezone), 10 ** get_currency_precision(settings.currency)


@dataclass(frozen=True)
class Counted:
    """The builder's count: exact, or ``estimate``d from a sample on a large programme; and the
    first few members (of the sample, when estimated), for identifier readers."""

    count: int
    sample: list[SampleMember]
    estimate: CountEstimate | None = None


async def _preview(request: AnyRequest, session: ConsoleSession, definition: Condition, *,
                   exact: bool = False) -> Counted:
    """As POST /v1/segments/preview: the count for everyone, the sample for identifier
    readers. Past ``segment_exact_count_up_to`` members the count is an estimate unless
    ``exact`` is asked for (docs/console.md, "Segments")."""
    settings = services(request).settings
    sample = SAMPLE_SIZE if session.role in IDENTIFIER_READERS else 0
    now = dt.datetime.now(dt.UTC)
    estimate = None
    async with transaction(services(request).pool) as conn:
        rows = 0 if exact else await member_rows(conn)
        if rows > settings.segment_exact_count_up_to:
            estimate = await estimate_segment(conn, definition, rows=rows, now=now,
                                              sample_members=settings.segment_sample_members,
                                              examples=sample)
            counted = Counted(count=estimate.count, estimate=estimate, sample=estimate.members)
        else:
            preview = await preview_segment(conn, definition, sample_size=sample, now=now)
            counted = Counted(count=preview.count,
                              sample=[] if isinstance(preview.sample, msgspec.UnsetType)
                              else preview.sample)
        # Audited as the API's preview is: the sample names members.
        await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                           action="segments.preview", subject_kind="segment", subject_id=None,
                           details={"count": counted.count, "estimated": estimate is not None,
                                    "sample": len(counted.sample), "via": "console"})
    return counted


def _page(request: AnyRequest, session: ConsoleSession, builder: Builder, *,
          segment_id: UUID | None, preview: Counted | None, status_code: int = 200,
          problem: str | None = None) -> Response[str]:
    template = ("segment_builder.html" if request.headers.get("hx-request")
                else "segment_edit.html")
    editor = session.role in MARKETING_EDITORS
    save_url = None
    if editor:
        save_url = f"/console/segments/{segment_id}" if segment_id else "/console/segments/new"
    return render(request, template, session=session, builder=builder, kinds=KINDS,
                  own_messages=OWN,
                  kind_labels=KIND_LABELS, ops=ATTRIBUTE_OPS, preview=preview,
                  segment_id=segment_id, save_url=save_url, problem=problem,
                  currency=services(request).settings.currency, status_code=status_code)


@get("/segments")
async def segments_page(request: AnyRequest, cursor: Cursor = None) -> Response[str]:
    """The saved segments, newest first, a page at a time."""
    session = await staff_session(request, MARKETING_READERS)
    async with transaction(services(request).pool) as conn:
        page = await list_segments(conn, limit=PAGE_SIZE, cursor=cursor or None)
    return render(request, "segments.html", session=session, page=page,
                  editor=session.role in MARKETING_EDITORS, cursor=cursor)


@get("/segments/new")
async def new_segment_page(request: AnyRequest) -> Response[str]:
    """An empty builder with one condition (active members) and its count."""
    session = await staff_session(request, MARKETING_READERS)
    tz, scale = _units(request)
    builder = Builder(rows=[new_row("status")])
    definition = definition_of(builder, tz=tz, scale=scale)
    assert definition is not None
    return _page(request, session, builder, segment_id=None,
                 preview=await _preview(request, session, definition))


@get("/segments/{segment_id:uuid}")
async def segment_page(request: AnyRequest, segment_id: FromPath[UUID]) -> Response[str]:
    """A saved segment in the builder, with its count now."""
    session = await staff_session(request, MARKETING_READERS)
    tz, scale = _units(request)
    async with transaction(services(request).pool) as conn:
        segment = await get_segment(conn, segment_id)
    builder = builder_of(segment, tz=tz, scale=scale)
    preview = await _preview(request, session, segment.definition)
    return _page(request, session, builder, segment_id=segment_id, preview=preview,
                 problem="saved" if request.query_params.get("saved") else None)


async def _posted(request: AnyRequest, roles: frozenset[str] | tuple[str, ...]
                  ) -> tuple[ConsoleSession, FormMultiDict]:
    session = await staff_session(request, roles)
    form = await request.form()
    check_csrf(request, session.csrf_token, form.get("csrf_token"))
    return session, form


@post("/segments/preview", status_code=200)
async def preview_partial(request: AnyRequest) -> Response[str]:
    """The live count (and, for identifier readers, a few members) of the builder's rows;
    a wrong row is a 400 partial naming it, and the rows are shown with its message."""
    session, form = await _posted(request, MARKETING_READERS)
    tz, scale = _units(request)
    builder = read_form(form)
    definition = definition_of(builder, tz=tz, scale=scale)
    if definition is None:
        return render(request, "segment_preview.html", session=session, own_messages=OWN,
                      preview=None,
                      builder=builder, oob=True, status_code=400)
    try:
        preview = await _preview(request, session, definition)
    except InvalidInput as exc:
        builder.errors["conditions"] = exc.detail
        return render(request, "segment_preview.html", session=session, own_messages=OWN,
                      preview=None,
                      builder=builder, oob=True, status_code=400)
    return render(request, "segment_preview.html", session=session, own_messages=OWN,
                      preview=preview,
                  builder=builder, oob=True)


@post("/segments/build", status_code=200)
async def build_segment(request: AnyRequest) -> Response[str]:
    """Add a condition (``op=add``, of type ``add_type``), remove one (``op=remove-N``),
    count (``op=count``) or count exactly past the estimate (``op=exact``): the builder again
    with its count. Changes nothing stored, so analysts may use it too; without script it is
    where the form's buttons post."""
    session, form = await _posted(request, MARKETING_READERS)
    tz, scale = _units(request)
    builder = read_form(form)
    op = str(form.get("op") or "count")
    segment_id = _segment_id(form.get("segment_id"))
    if op == "add":
        kind = str(form.get("add_type") or "")
        if kind not in KINDS:
            raise InvalidInput("Choose a condition type from the list.", field="add_type")
        if len(builder.rows) >= MAX_ROWS:
            builder.errors["conditions"] = MESSAGES[5]
        else:
            builder.rows.append(new_row(kind))
    elif op.startswith("remove-") and op[7:].isdigit() and int(op[7:]) < len(builder.rows):
        del builder.rows[int(op[7:])]
    definition = definition_of(builder, tz=tz, scale=scale)
    preview = None
    if definition is not None:
        try:
            preview = await _preview(request, session, definition, exact=op == "exact")
        except InvalidInput as exc:
            builder.errors["conditions"] = exc.detail
    return _page(request, session, builder, segment_id=segment_id, preview=preview)


def _segment_id(value: Any) -> UUID | None:
    try:
        return UUID(str(value)) if value else None
    except ValueError:
        return None


async def _save(request: AnyRequest, segment_id: UUID | None) -> Response[Any]:
    session, form = await _posted(request, MARKETING_EDITORS)
    tz, scale = _units(request)
    builder = read_form(form)
    definition = definition_of(builder, tz=tz, scale=scale)
    if not builder.name:
        builder.errors["name"] = MESSAGES[6]
    if definition is None or builder.errors:
        return _page(request, session, builder, segment_id=segment_id, preview=None,
                     status_code=400)
    staff_id = session.principal.staff_id
    now = dt.datetime.now(dt.UTC)
    try:
        async with transaction(services(request).pool) as conn:
            if segment_id is None:
                data = SegmentCreate(name=builder.name, description=builder.description,
                                     definition=definition)
                segment = await create_segment(conn, data, staff_id=staff_id, now=now)
                await record_audit(conn, actor_kind="staff", actor_id=staff_id,
                                   action="segments.create", subject_kind="segment",
                                   subject_id=segment.segment_id,
                                   details={"name": segment.name, "via": "console"})
            else:
                update = SegmentUpdate(name=builder.name, description=builder.description,
                                       definition=definition)
                segment = await update_segment(conn, segment_id, update, staff_id=staff_id,
                                               now=now)
                await record_audit(conn, actor_kind="staff", actor_id=staff_id,
                                   action="segments.update", subject_kind="segment",
                                   subject_id=segment_id,
                                   details={"fields": ["definition", "description", "name"],
                                            "via": "console"})
    except InvalidInput as exc:
        key = "name" if exc.field == "name" else "conditions"
        builder.errors[key] = exc.detail
        return _page(request, session, builder, segment_id=segment_id, preview=None,
                     status_code=400)
    return Redirect(f"/console/segments/{segment.segment_id}?saved=1", status_code=303)


@post("/segments/new", status_code=303)
async def create_segment_submit(request: AnyRequest) -> Response[Any]:
    """Save the builder's rows as a new segment (POST /v1/segments)."""
    return await _save(request, None)


@post("/segments/{segment_id:uuid}", status_code=303)
async def update_segment_submit(request: AnyRequest, segment_id: FromPath[UUID]) -> Response[Any]:
    """Save the builder's rows over a segment (PATCH /v1/segments/{id})."""
    return await _save(request, segment_id)
