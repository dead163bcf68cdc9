"""Segments for marketing staff: save definitions, preview them, page through their members.
Analysts may read and preview (counts only: no member ids or numbers); only admins and
marketers save segments or see who is in them."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Controller, get, patch, post
from litestar.params import FromPath, JSONBody
from msgspec import UNSET

from api.auth import staff_with
from api.deps import STAFF_DEPENDENCIES, Db, Staff, utc_now
from api.idempotency import idempotent
from api.params import Cursor, Limit
from loyalty.access.audit import record_audit
from loyalty.access.roles import IDENTIFIER_READERS, MARKETING_EDITORS, MARKETING_READERS
from loyalty.promotions.segments import (
    create_segment,
    get_segment,
    list_segments,
    preview_segment,
    segment_members,
    update_segment,
)
from schemas.base import Page
from schemas.segments import (
    Segment,
    SegmentCreate,
    SegmentMember,
    SegmentPreview,
    SegmentPreviewRequest,
    SegmentUpdate,
)


class SegmentsController(Controller):
    path = "/v1/segments"
    tags = ["segments"]
    guards = [staff_with(*MARKETING_READERS)]
    dependencies = STAFF_DEPENDENCIES

    @post("", operation_id="createSegment", guards=[staff_with(*MARKETING_EDITORS)])
    @idempotent
    async def create(self, data: JSONBody[SegmentCreate], staff: Staff, conn: Db) -> Segment:
        """Save a definition under a name; refused if it is too complex or contradicts itself."""
        segment = await create_segment(conn, data, staff_id=staff.staff_id, now=utc_now())
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="segments.create", subject_kind="segment",
                           subject_id=segment.segment_id, details={"name": segment.name})
        return segment

    @get("", operation_id="listSegments")
    async def index(self, conn: Db, limit: Limit = 50, cursor: Cursor = None) -> Page[Segment]:
        """Saved segments, newest first."""
        return await list_segments(conn, limit=limit, cursor=cursor)

    @post("/preview", operation_id="previewSegment", status_code=200)
    async def preview(self, data: JSONBody[SegmentPreviewRequest], staff: Staff,
                      conn: Db) -> SegmentPreview:
        """How many members a definition selects now, and the ids and numbers of a few (only
        the count for analysts, who work on aggregates)."""
        if staff.role not in IDENTIFIER_READERS:
            counted = await preview_segment(conn, data.definition, sample_size=0, now=utc_now())
            preview = SegmentPreview(count=counted.count)
        else:
            preview = await preview_segment(conn, data.definition, sample_size=data.sample_size,
                                            now=utc_now())
        # Audited like a list of a segment's members: the sample names members.
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="segments.preview", subject_kind="segment", subject_id=None,
                           details={"count": preview.count,
                                    "sample": 0 if isinstance(preview.sample, msgspec.UnsetType)
                                    else len(preview.sample)})
        return preview

    @get("/{segment_id:uuid}", operation_id="getSegment")
    async def read(self, segment_id: FromPath[UUID], conn: Db) -> Segment:
        """One saved segment and its definition."""
        return await get_segment(conn, segment_id)

    @patch("/{segment_id:uuid}", operation_id="updateSegment",
           guards=[staff_with(*MARKETING_EDITORS)])
    @idempotent
    async def update(self, segment_id: FromPath[UUID], data: JSONBody[SegmentUpdate],
                     staff: Staff, conn: Db) -> Segment:
        """Rename, describe or redefine a segment; omitted fields stay."""
        segment = await update_segment(conn, segment_id, data, staff_id=staff.staff_id,
                                       now=utc_now())
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="segments.update", subject_kind="segment",
                           subject_id=segment_id,
                           details={"fields": sorted(f for f in SegmentUpdate.__struct_fields__
                                                     if getattr(data, f) is not UNSET)})
        return segment

    @get("/{segment_id:uuid}/members", operation_id="listSegmentMembers",
         guards=[staff_with(*MARKETING_EDITORS)])
    async def members(self, segment_id: FromPath[UUID], staff: Staff, conn: Db,
                      limit: Limit = 50, cursor: Cursor = None) -> Page[SegmentMember]:
        """The members the segment selects now, in member-id order; the read is audited."""
        page = await segment_members(conn, segment_id, now=utc_now(), limit=limit,
                                     cursor=cursor)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="segments.members", subject_kind="segment",
                           subject_id=segment_id, details={"results": len(page.items)})
        return page
