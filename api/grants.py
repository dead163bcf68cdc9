"""Bulk points grants for marketing staff: the same points to a list of members or a segment,
once per member, idempotent by the request's ``Idempotency-Key``."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.params import FromPath, JSONBody

from api.auth import staff_with
from api.deps import STAFF_DEPENDENCIES, Db, Ledger, Staff, Svc, utc_now
from api.idempotency import idempotent
from api.params import Cursor, Limit
from loyalty.access.roles import MARKETING_EDITORS
from loyalty.core.idempotency import Idempotency
from loyalty.points.grants import get_grant, grant_points, list_grants
from schemas.base import Page
from schemas.grants import GrantRequest, PointsGrant

# 100,000 member ids are about 3.9 MB of JSON: more than the API's usual body limit allows.
GRANT_BODY_LIMIT = 8 * 1024 * 1024


class PointsGrantsController(Controller):
    path = "/v1/points/grants"
    tags = ["points grants"]
    guards = [staff_with(*MARKETING_EDITORS)]
    dependencies = STAFF_DEPENDENCIES

    @post("", operation_id="grantPoints", status_code=201,
          request_max_body_size=GRANT_BODY_LIMIT)
    @idempotent(required=True)
    async def grant(
        self, data: JSONBody[GrantRequest], staff: Staff, ledger: Ledger, services: Svc,
        idempotency: Idempotency,
    ) -> Response[PointsGrant]:
        """Grant points to every active or dormant member of the list or segment, once each;
        audited. The same key and body again resume or replay the grant (same grant id)."""
        # Batches commit on ``ledger`` as they go, so a grant cut short is resumed by its
        # retry (found by the key the grant keeps); the key's answer commits at the end
        # (api.idempotency).
        granted, existed = await grant_points(
            ledger, request=data, idempotency=idempotency, staff_id=staff.staff_id,
            rulebook=services.rulebook, programme=services.programme, now=utc_now())
        headers = {"Idempotent-Replayed": "true"} if existed else {}
        return Response(granted, status_code=201, headers=headers)

    @get("", operation_id="listPointsGrants")
    async def grants(self, conn: Db, limit: Limit = 50,
                     cursor: Cursor = None) -> Page[PointsGrant]:
        """Grants, newest first."""
        return await list_grants(conn, limit=limit, cursor=cursor)

    @get("/{grant_id:uuid}", operation_id="getPointsGrant")
    async def one(self, conn: Db, grant_id: FromPath[UUID]) -> PointsGrant:
        """A grant: its target, status, and the members and points granted so far."""
        return await get_grant(conn, grant_id)
