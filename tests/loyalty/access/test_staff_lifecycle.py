"""The last active admin stays, however the changes race: two real connections each switch
off the other of the only two admins; one wins, the other is refused once the first commits."""

from __future__ import annotations

import asyncio

import pytest

from loyalty.access.staff import create_staff, update_staff
from loyalty.core.db import Connection
from loyalty.core.errors import Conflict


async def _until_waiting(watcher: Connection, blocker: Connection) -> None:
    pid = await blocker.fetchval("select pg_backend_pid()")
    for _ in range(1000):
        if await watcher.fetchval(
                "select count(*) from pg_stat_activity where $1 = any(pg_blocking_pids(pid))",
                pid):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the second change never waited for the first")


@pytest.mark.parametrize("change", [{"active": False}, {"role": "support"}])
async def test_two_admins_removing_each_other_at_once_leave_one(
    connections: list[Connection], change: dict[str, object],
) -> None:
    setup, first, second = connections
    one = await create_staff(setup, email="one@staff.example", password_hash="x", role="admin")
    two = await create_staff(setup, email="two@staff.example", password_hash="x", role="admin")

    holding = first.transaction()
    await holding.start()
    await update_staff(first, one.staff_id, **change)  # type: ignore[arg-type]
    racing = asyncio.create_task(update_staff(second, two.staff_id, **change))  # type: ignore[arg-type]
    await _until_waiting(setup, first)
    assert not racing.done()
    await holding.commit()

    with pytest.raises(Conflict) as refused:
        await racing
    assert refused.value.code == "last_admin"
    left = await setup.fetch("select email from staff where role = 'admin' and active")
    assert [r["email"] for r in left] == ["two@staff.example"]


async def test_a_change_that_keeps_an_admin_an_admin_takes_no_lock(
    connections: list[Connection],
) -> None:
    setup, first, second = connections
    only = await create_staff(setup, email="only@staff.example", password_hash="x", role="admin")
    other = await create_staff(setup, email="m@staff.example", password_hash="x",
                               role="marketer")
    holding = first.transaction()
    await holding.start()
    renamed = await update_staff(first, only.staff_id, display_name="Admin")
    # Another account changes meanwhile without waiting for the renaming.
    moved = await asyncio.wait_for(update_staff(second, other.staff_id, role="analyst"), 5)
    await holding.commit()
    assert renamed.changes == {"display_name": ["", "Admin"]}
    assert moved.changes == {"role": ["marketer", "analyst"]}
    with pytest.raises(Conflict):
        await update_staff(setup, only.staff_id, active=False)
