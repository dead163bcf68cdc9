"""A batched job crashing part-way, on purpose: PostgreSQL refuses one member's row of a table,
so the batch holding that member fails and the batches before it stay committed."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from loyalty.core.db import Connection

# Tables a test may make refuse a row (the name goes into SQL: a fixed list, not input).
Refusable = Literal["member_at_risk", "birthday_rewards"]


async def refuse_member(conn: Connection, table: Refusable, member_id: UUID, *,
                        events: Literal["insert", "insert or update"] = "insert") -> None:
    """Until ``allow_members`` (or the transaction's end), writing ``member_id``'s row of
    ``table`` raises 'refused'."""
    await conn.execute(
        f"""
        create function refuse_member() returns trigger language plpgsql as $$
        begin
            if new.member_id = current_setting('test.refused')::uuid then
                raise exception 'refused';
            end if;
            return new;
        end $$;
        create trigger refuse_member before {events} on {table}
            for each row execute function refuse_member();
        """)
    await conn.execute("select set_config('test.refused', $1, true)", str(member_id))


async def allow_members(conn: Connection, table: Refusable) -> None:
    await conn.execute(f"drop trigger refuse_member on {table}")
