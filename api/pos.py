"""The checkout terminal's API (terminal API key)."""

from __future__ import annotations

import msgspec
from litestar import Controller, get
from litestar.di import Provide

from api.auth import terminals_only
from api.deps import Db, Till, provide_conn, provide_terminal
from loyalty.stores import get_terminal
from schemas.admin import WhoAmI


class PosController(Controller):
    path = "/v1/pos"
    tags = ["point of sale"]
    guards = [terminals_only]
    dependencies = {"conn": Provide(provide_conn), "terminal": Provide(provide_terminal)}

    @get("/whoami", operation_id="posWhoAmI")
    async def whoami(self, terminal: Till, conn: Db) -> WhoAmI:
        """The terminal this key belongs to, and its store."""
        found = await get_terminal(conn, terminal.terminal_id)
        return msgspec.convert(
            {"terminal_id": found.terminal_id, "name": found.name, "store": found.store}, WhoAmI,
            from_attributes=True,
        )
