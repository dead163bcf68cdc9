"""Ended sessions, known to every API process within a second, with no database read per request.

An access token names its principal and its session (claim ``sid``: the refresh-token family).
Each process keeps, per member or staff account, its *standing*: whether it may sign in, its
role, and its sessions ended lately. A standing is read from PostgreSQL on first sight and then
kept until PostgreSQL says it changed: the triggers of migration 0015 NOTIFY ``loyalty_sessions``
with ``member:<id>`` or ``staff:<id>`` in the transaction that ends a session, suspends a member,
or deactivates or re-roles a staff account, and each process listens on one connection of its
own. Decision 0011 says why this and not a stamp per principal.

Kept standings are trusted only while the listener proves it hears everything: every quarter
second it notifies itself on a channel of its own, and hearing that proves every change committed
before it was sent has been heard too (PostgreSQL has one queue of notifications, read in order).
A standing neither read nor proven within ``PROMISE_SECONDS`` is read again, so a lost listener
costs at most one read per principal per second and never a stale answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from loyalty.access.principals import MemberPrincipal, StaffPrincipal
from loyalty.core.db import Pool
from loyalty.core.errors import AuthenticationFailed

log = logging.getLogger(__name__)

CHANNEL = "loyalty_sessions"
LISTENER_NAME = "loyalty session listener"
# How soon every process refuses the tokens of an ended session.
PROMISE_SECONDS = 1.0
# How often the listener proves itself: well inside the promise, so a slow round trip or two
# does not make every process read standings again.
BEAT_SECONDS = 0.25
RECONNECT_MAX_SECONDS = 5.0

_STANDING = {
    "member": """
        select m.status in ('active', 'dormant') as active, null::text as role,
               array(select distinct t.family_id from refresh_tokens t
                      where t.member_id = m.member_id and t.revoked_at > now() - $2::interval)
                   as ended
          from members m
         where m.member_id = $1
        """,
    "staff": """
        select s.active, s.role,
               array(select distinct t.family_id from refresh_tokens t
                      where t.staff_id = s.staff_id and t.revoked_at > now() - $2::interval)
                   as ended
          from staff s
         where s.staff_id = $1
        """,
}


@dataclass(frozen=True, slots=True)
class Standing:
    """What PostgreSQL said of a principal, and when (``time.monotonic``) it was asked."""

    active: bool
    role: str | None
    ended: frozenset[UUID]
    read_at: float


_UNREAD = Standing(False, None, frozenset(), -math.inf)


class _Read:
    """A read of one standing in flight; ``current`` turns false when a change is heard
    meanwhile, so its answer serves the requests waiting for it but is not kept."""

    __slots__ = ("current", "task")

    def __init__(self, task: asyncio.Task[Standing]) -> None:
        self.task = task
        self.current = True


def _key(principal: MemberPrincipal | StaffPrincipal) -> tuple[str, str, UUID]:
    if isinstance(principal, MemberPrincipal):
        return f"member:{principal.member_id}", "member", principal.member_id
    return f"staff:{principal.staff_id}", "staff", principal.staff_id


def judge(principal: MemberPrincipal | StaffPrincipal, standing: Standing) -> None:
    """Refuse a token whose session has ended, or whose account changed since it was issued."""
    if principal.session_id is None:
        raise AuthenticationFailed("this token belongs to no session: refresh it or sign in "
                                   "again", code="session_ended")
    if not standing.active:
        raise AuthenticationFailed("this account can no longer sign in: contact support",
                                   code="session_ended")
    if principal.session_id in standing.ended:
        raise AuthenticationFailed("this session has ended (signed out): sign in again",
                                   code="session_ended")
    if isinstance(principal, StaffPrincipal) and principal.role != standing.role:
        raise AuthenticationFailed("this account's role has changed: sign in again",
                                   code="session_ended")


class Revocations:
    """Each process's standings of the principals it has seen, and the listener that keeps
    them true. ``check`` is the per-request call; ``listening`` runs the listener."""

    def __init__(self, pool: Pool, *, access_ttl: int, size: int = 100_000) -> None:
        self._pool = pool
        # Sessions ended longer ago than this have no access token left (each lives at most
        # access_ttl); twice that leaves room for clocks that disagree.
        self._window = timedelta(seconds=2 * access_ttl)
        self._size = size
        self._known: OrderedDict[str, Standing] = OrderedDict()
        self._reading: dict[str, _Read] = {}
        # When the last beat heard was sent: every change committed before it has been heard.
        self._proven_at = -math.inf
        self._beats: dict[int, float] = {}
        self._warned_at = -math.inf
        self.reads = 0  # standings read from PostgreSQL, for tests and the report

    @property
    def proven_at(self) -> float:
        """When (``time.monotonic``) the last beat heard was sent: every change committed before
        then has been heard."""
        return self._proven_at

    # -- the request path -----------------------------------------------------------------------

    async def check(self, principal: MemberPrincipal | StaffPrincipal) -> None:
        """Raise AuthenticationFailed unless ``principal``'s session and account still stand.
        No database round trip while the standing is known and the listener proven."""
        if principal.session_id is None:
            judge(principal, _UNREAD)  # refused without asking anyone
        key, kind, subject = _key(principal)
        now = time.monotonic()
        standing = self._known.get(key)
        if standing is None or now - max(standing.read_at, self._proven_at) > PROMISE_SECONDS:
            standing = await self._read(key, kind, subject)
        else:
            self._known.move_to_end(key)
        judge(principal, standing)

    async def _read(self, key: str, kind: str, subject: UUID) -> Standing:
        # One read per principal at a time, however many of its requests arrive together.
        read = self._reading.get(key)
        if read is None:
            read = _Read(asyncio.ensure_future(self._fetch(kind, subject)))
            self._reading[key] = read
            read.task.add_done_callback(functools.partial(self._done, key, read))
        return await asyncio.shield(read.task)

    async def _fetch(self, kind: str, subject: UUID) -> Standing:
        async with self._pool.acquire() as conn:
            # Taken before asking: the answer is at least this fresh.
            read_at = time.monotonic()
            row = await conn.fetchrow(_STANDING[kind], subject, self._window)
        self.reads += 1
        if row is None:
            return Standing(False, None, frozenset(), read_at)
        return Standing(row["active"], row["role"], frozenset(row["ended"]), read_at)

    def _done(self, key: str, read: _Read, task: asyncio.Task[Standing]) -> None:
        if self._reading.get(key) is read:
            del self._reading[key]
        if task.cancelled() or task.exception() is not None or not read.current:
            return
        self._known[key] = task.result()
        self._known.move_to_end(key)
        if len(self._known) > self._size:
            self._known.popitem(last=False)

    # -- what the listener hears ----------------------------------------------------------------

    def forget(self, key: str) -> None:
        """Drop what is known of ``key`` (``member:<id>`` or ``staff:<id>``), and the read of
        it in flight, which may have started before the change."""
        self._known.pop(key, None)
        read = self._reading.pop(key, None)
        if read is not None:
            read.current = False

    def forget_everything(self) -> None:
        self._known.clear()
        for read in self._reading.values():
            read.current = False
        self._reading.clear()

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        self.forget(str(payload))

    def _heard_beat(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        sent = self._beats.pop(int(str(payload)), None)
        if sent is not None:
            self._proven_at = max(self._proven_at, sent)

    # -- the listener ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def listening(self, dsn: str) -> AsyncIterator[None]:
        """Listen for changes while the block runs (an API process's lifespan)."""
        task = asyncio.create_task(self._listen(dsn), name="session listener")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen(self, dsn: str) -> None:
        delay = 0.1
        while True:
            proven_before = self._proven_at
            conn: asyncpg.Connection[Any] | None = None
            try:
                conn = await asyncpg.connect(
                    dsn, timeout=5, server_settings={"application_name": LISTENER_NAME})
                await self._listen_on(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever failed: stop trusting, reconnect, never die
                self._warn(exc)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)
            if self._proven_at > proven_before:
                delay = 0.1  # it worked until a moment ago: try again at once
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def _listen_on(self, conn: asyncpg.Connection[Any]) -> None:
        beat_channel = f"{CHANNEL}_beat_{uuid.uuid4().hex}"
        await conn.add_listener(CHANNEL, self._heard)
        await conn.add_listener(beat_channel, self._heard_beat)
        # Changes made while nobody listened were missed: what was known before is not
        # trusted, and reads in flight are not kept.
        self.forget_everything()
        self._beats.clear()
        number = 0
        while True:
            number += 1
            self._beats[number] = time.monotonic()
            await conn.execute("select pg_notify($1, $2)", beat_channel, str(number),
                               timeout=PROMISE_SECONDS)
            await asyncio.sleep(BEAT_SECONDS)

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        # Once a minute, not once a reconnect: an outage must not flood the log.
        if now - self._warned_at > 60:
            self._warned_at = now
            log.warning("session listener lost (%s): standings are read from the database "
                        "at most once a second per account until it is back", exc)
