"""A posting, built in memory against a member's ledger as read: which lots it draws, expires,
releases and creates, and the entries that say so."""

from __future__ import annotations

import datetime as dt
from uuid import UUID, uuid4

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from loyalty.core.errors import InsufficientPoints
from loyalty.points.posting import Links, Lot, MemberLedger, Posting, settled_balance

NOW = dt.datetime(2026, 6, 1, 3, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
NO_LINKS = Links()


def lot(points: int, *, remaining: int | None = None, released: bool = True,
        available_at: dt.datetime | None = None,
        expires_at: dt.datetime | None = NOW + 365 * DAY,
        earned_at: dt.datetime = NOW - 30 * DAY) -> Lot:
    """A lot as read: released unless told otherwise, expiring in a year."""
    if available_at is None:
        available_at = earned_at if released else NOW + 7 * DAY
    return Lot(uuid4(), points, points if remaining is None else remaining, earned_at,
               available_at, released, expires_at)


def ledger(*lots: Lot) -> MemberLedger:
    """A member's ledger whose balances agree with its lots."""
    return MemberLedger(
        member_id=uuid4(), member_number="1000001", name="Hanako Yamada", status="active",
        birth_date=None, merged_into=None, version=0,
        available=sum(lot.remaining for lot in lots if lot.released),
        pending=sum(lot.remaining for lot in lots if not lot.released),
        lifetime_earned=sum(lot.points for lot in lots), lifetime_redeemed=0,
        lifetime_expired=0, purchase_count=0, birthday_bonus_year=None, rules_version=1,
        lots=list(lots),
    )


def redeem(posting: Posting, points: int) -> UUID:
    return posting.draw(kind="redeem", points=points, reason="redeemed at the till",
                        source="purchase", links=NO_LINKS)


def earn(posting: Posting, points: int, *, available_at: dt.datetime = NOW,
         entry_id: UUID | None = None) -> UUID:
    return posting.earn(kind="earn", points=points, reason="purchase", source="purchase",
                        links=NO_LINKS, earned_at=NOW, available_at=available_at,
                        expires_at=NOW + 365 * DAY, entry_id=entry_id)


def take_back(posting: Posting, points: int, first_from: list[UUID]) -> tuple[int, int]:
    return posting.take_back(points=points, first_from=first_from, reason="returned",
                             source="return", links=NO_LINKS)


def drawn_by(posting: Posting, entry_id: UUID) -> dict[UUID, int]:
    return {d.lot_id: d.points for d in posting.drawn if d.entry_id == entry_id}


def remaining(posting: Posting, *lots: Lot) -> list[int]:
    return [posting.lots[lot.lot_id].remaining for lot in lots]


def entry(posting: Posting, entry_id: UUID) -> tuple[str, int]:
    [found] = [e for e in posting.entries if e.entry_id == entry_id]
    return found.kind, found.amount


# -- draw -------------------------------------------------------------------------------------


def test_draw_takes_the_earliest_expiring_lot_first_and_splits_the_next() -> None:
    late = lot(100, expires_at=NOW + 300 * DAY)
    early = lot(100, expires_at=NOW + 10 * DAY)
    posting = Posting(ledger(late, early), NOW)

    entry_id = redeem(posting, 150)

    assert remaining(posting, early, late) == [0, 50]
    assert drawn_by(posting, entry_id) == {early.lot_id: -100, late.lot_id: -50}
    assert entry(posting, entry_id) == ("redeem", -150)
    assert (posting.available, posting.redeemed) == (50, 150)


def test_draw_takes_lots_without_expiry_last() -> None:
    never = lot(100, expires_at=None, earned_at=NOW - 300 * DAY)
    expiring = lot(100, expires_at=NOW + 3_000 * DAY, earned_at=NOW - DAY)
    posting = Posting(ledger(never, expiring), NOW)

    entry_id = redeem(posting, 120)

    assert drawn_by(posting, entry_id) == {expiring.lot_id: -100, never.lot_id: -20}


def test_draw_takes_the_earliest_earned_of_lots_expiring_together() -> None:
    newer = lot(100, earned_at=NOW - DAY)
    older = lot(100, earned_at=NOW - 2 * DAY)
    posting = Posting(ledger(newer, older), NOW)

    entry_id = redeem(posting, 30)

    assert drawn_by(posting, entry_id) == {older.lot_id: -30}


def test_draw_of_the_whole_available_balance_empties_every_released_lot() -> None:
    lots = [lot(10), lot(20, expires_at=None), lot(30, expires_at=NOW + DAY)]
    posting = Posting(ledger(*lots), NOW)

    redeem(posting, 60)

    assert remaining(posting, *lots) == [0, 0, 0]
    assert posting.available == 0


def test_draw_beyond_the_available_balance_raises_and_changes_nothing() -> None:
    held = lot(100)
    posting = Posting(ledger(held), NOW)

    with pytest.raises(InsufficientPoints):
        redeem(posting, 101)

    assert (posting.available, posting.entries, posting.drawn) == (100, [], [])
    assert remaining(posting, held) == [100]


def test_draw_never_takes_pending_points() -> None:
    spendable = lot(100, expires_at=NOW + 200 * DAY)
    pending = lot(500, released=False, expires_at=NOW + 100 * DAY)
    posting = Posting(ledger(spendable, pending), NOW)

    with pytest.raises(InsufficientPoints):
        redeem(posting, 101)
    entry_id = redeem(posting, 100)

    assert drawn_by(posting, entry_id) == {spendable.lot_id: -100}
    assert remaining(posting, pending) == [500]
    assert posting.balance() == (0, 500)


@pytest.mark.parametrize("points", [0, -5])
def test_draw_refuses_a_non_positive_amount(points: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        redeem(Posting(ledger(lot(100)), NOW), points)


# -- settling the ledger as read --------------------------------------------------------------


def test_reading_expires_every_lot_past_its_expiry_in_one_entry() -> None:
    expired = lot(50, remaining=30, expires_at=NOW - DAY)
    expiring_now = lot(10, expires_at=NOW)
    expired_pending = lot(20, released=False, expires_at=NOW - DAY)
    live = lot(100, expires_at=NOW + DAY)
    posting = Posting(ledger(expired, expiring_now, expired_pending, live), NOW)

    [expiry] = posting.entries

    assert (expiry.kind, expiry.amount, expiry.source) == ("expire", -60, "system")
    assert drawn_by(posting, expiry.entry_id) == {
        expired.lot_id: -30, expiring_now.lot_id: -10, expired_pending.lot_id: -20}
    assert remaining(posting, expired, expiring_now, expired_pending, live) == [0, 0, 0, 100]
    assert posting.balance() == (100, 0)
    assert posting.expired == 60


def test_reading_releases_pending_lots_whose_return_window_has_passed() -> None:
    due = lot(10, released=False, available_at=NOW - dt.timedelta(hours=1))
    due_now = lot(20, released=False, available_at=NOW)
    not_yet = lot(40, released=False, available_at=NOW + dt.timedelta(seconds=1))
    posting = Posting(ledger(lot(5), due, due_now, not_yet), NOW)

    assert posting.released == {due.lot_id, due_now.lot_id}
    assert [posting.lots[x.lot_id].released for x in (due, due_now, not_yet)] == [
        True, True, False]
    assert posting.balance() == (35, 40)
    assert posting.entries == []


def test_released_points_can_be_spent_in_the_same_posting() -> None:
    due = lot(40, released=False, available_at=NOW - DAY)
    posting = Posting(ledger(due), NOW)

    entry_id = redeem(posting, 40)

    assert drawn_by(posting, entry_id) == {due.lot_id: -40}


def test_a_pending_lot_that_expired_is_expired_from_pending_not_released() -> None:
    stale = lot(25, released=False, available_at=NOW - 2 * DAY, expires_at=NOW - DAY)
    posting = Posting(ledger(stale), NOW)

    assert [(e.kind, e.amount) for e in posting.entries] == [("expire", -25)]
    assert posting.released == set()
    assert posting.balance() == (0, 0)


def test_reading_a_ledger_with_nothing_due_changes_nothing() -> None:
    posting = Posting(ledger(lot(100), lot(50, released=False)), NOW)

    assert (posting.entries, posting.drawn, posting.released) == ([], [], set())
    assert posting.balance() == (100, 50)


def test_settled_balance_counts_expiries_and_releases_not_yet_written() -> None:
    member = ledger(lot(100, expires_at=NOW - DAY), lot(30, released=False, available_at=NOW),
                    lot(7, released=False), lot(1))

    assert settled_balance(member, NOW) == (31, 7)


# -- earn -------------------------------------------------------------------------------------


def test_earn_due_now_creates_a_released_lot_and_an_entry() -> None:
    posting = Posting(ledger(lot(10)), NOW)

    entry_id = earn(posting, 50)

    [created] = posting.new_lots
    assert (created.entry_id, created.points, created.released) == (entry_id, 50, True)
    assert posting.lots[created.lot_id].remaining == 50
    assert entry(posting, entry_id) == ("earn", 50)
    assert posting.balance() == (60, 0)
    assert posting.earned == 50


def test_earn_within_the_return_window_creates_a_pending_lot() -> None:
    posting = Posting(ledger(lot(10)), NOW)

    earn(posting, 50, available_at=NOW + 14 * DAY)

    [created] = posting.new_lots
    assert created.released is False
    assert posting.balance() == (10, 50)
    with pytest.raises(InsufficientPoints):
        redeem(posting, 11)


def test_earn_twice_with_the_same_entry_id_grows_one_entry_over_two_lots() -> None:
    posting = Posting(ledger(), NOW)

    entry_id = earn(posting, 30)
    again = earn(posting, 12, available_at=NOW + DAY, entry_id=entry_id)

    assert again == entry_id
    assert [(e.entry_id, e.amount) for e in posting.entries] == [(entry_id, 42)]
    assert [(x.entry_id, x.points, x.released) for x in posting.new_lots] == [
        (entry_id, 30, True), (entry_id, 12, False)]
    assert posting.balance() == (30, 12)


@pytest.mark.parametrize("points", [0, -5])
def test_earn_refuses_a_non_positive_amount(points: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        earn(Posting(ledger(), NOW), points)


# -- take back --------------------------------------------------------------------------------


def test_take_back_takes_from_the_named_lots_first_even_pending_ones() -> None:
    early = lot(100, expires_at=NOW + DAY)
    from_purchase = lot(40, released=False, expires_at=NOW + 365 * DAY)
    posting = Posting(ledger(early, from_purchase), NOW)

    assert take_back(posting, 60, [from_purchase.lot_id]) == (60, 0)

    [reversal] = posting.entries
    assert (reversal.kind, reversal.amount) == ("reverse", -60)
    assert drawn_by(posting, reversal.entry_id) == {from_purchase.lot_id: -40, early.lot_id: -20}
    assert posting.balance() == (80, 0)


def test_take_back_falls_back_to_spendable_lots_earliest_expiry_first() -> None:
    late = lot(100, expires_at=NOW + 300 * DAY)
    early = lot(100, expires_at=NOW + 3 * DAY)
    posting = Posting(ledger(late, early), NOW)

    assert take_back(posting, 120, [uuid4()]) == (120, 0)
    assert remaining(posting, early, late) == [0, 80]


def test_take_back_never_takes_pending_lots_it_was_not_pointed_to() -> None:
    other_pending = lot(100, released=False)
    posting = Posting(ledger(lot(10), other_pending), NOW)

    assert take_back(posting, 50, []) == (10, 40)
    assert remaining(posting, other_pending) == [100]


def test_take_back_reports_the_shortfall_without_going_below_zero() -> None:
    spent_down = lot(100, remaining=30)
    posting = Posting(ledger(spent_down), NOW)

    assert take_back(posting, 50, [spent_down.lot_id]) == (30, 20)
    assert [(e.kind, e.amount) for e in posting.entries] == [("reverse", -30)]
    assert posting.balance() == (0, 0)


@pytest.mark.parametrize("points", [0, 50])
def test_take_back_with_nothing_to_take_writes_no_entry(points: int) -> None:
    posting = Posting(ledger(), NOW)

    assert take_back(posting, points, []) == (0, points)
    assert posting.entries == []


# -- drain ------------------------------------------------------------------------------------


def test_drain_empties_every_lot_pending_or_not_in_one_entry() -> None:
    lots = [lot(100, remaining=70), lot(20, released=False), lot(5, expires_at=None)]
    posting = Posting(ledger(*lots), NOW)

    drained = posting.drain(kind="transfer", reason="merged", source="merge", links=NO_LINKS)

    [transfer] = posting.entries
    assert (transfer.kind, transfer.amount) == ("transfer", -95)
    assert drawn_by(posting, transfer.entry_id) == {x.lot_id: -x.remaining for x in lots}
    assert [(x.lot_id, x.remaining, x.released) for x in drained] == [
        (x.lot_id, x.remaining, x.released) for x in lots]
    assert remaining(posting, *lots) == [0, 0, 0]
    assert posting.balance() == (0, 0)


def test_drain_leaves_out_lots_already_expired_on_reading() -> None:
    expired = lot(10, expires_at=NOW - DAY)
    live = lot(20)
    posting = Posting(ledger(expired, live), NOW)

    drained = posting.drain(kind="transfer", reason="merged", source="merge", links=NO_LINKS)

    assert [x.lot_id for x in drained] == [live.lot_id]
    assert [(e.kind, e.amount) for e in posting.entries] == [("expire", -10), ("transfer", -20)]


def test_drain_of_an_empty_ledger_writes_nothing() -> None:
    posting = Posting(ledger(lot(10, remaining=0)), NOW)

    assert posting.drain(kind="transfer", reason="merged", source="merge", links=NO_LINKS) == []
    assert posting.entries == []


# -- any sequence keeps the books balanced ----------------------------------------------------


@st.composite
def read_lots(draw: st.DrawFn) -> Lot:
    """A lot as the ledger read returns it: some left, maybe due for release or expiry."""
    points = draw(st.integers(1, 500))
    earned_at = NOW - draw(st.integers(1, 400)) * DAY
    available_at = NOW + draw(st.integers(-30, 10)) * DAY
    released = available_at <= NOW and draw(st.booleans())
    expires_in = draw(st.none() | st.integers(-10, 400))
    return Lot(uuid4(), points, draw(st.integers(1, points)), earned_at, available_at, released,
               None if expires_in is None else NOW + expires_in * DAY)


def expiry_key(lot: Lot) -> dt.datetime:
    return lot.expires_at or dt.datetime.max.replace(tzinfo=dt.UTC)


class PostingSequence(RuleBasedStateMachine):
    """Earn, draw, take back and drain in any order against any ledger as read."""

    @initialize(lots=st.lists(read_lots(), max_size=6))
    def read(self, lots: list[Lot]) -> None:
        self.ledger = ledger(*lots)
        self.start_total = self.ledger.available + self.ledger.pending
        self.posting = Posting(self.ledger, NOW)
        self.earn_entries: list[UUID] = []

    @rule(points=st.integers(1, 500), pending_days=st.integers(-2, 5), grow=st.booleans())
    def earn(self, points: int, pending_days: int, grow: bool) -> None:
        entry_id = self.earn_entries[-1] if grow and self.earn_entries else None
        self.earn_entries.append(
            earn(self.posting, points, available_at=NOW + pending_days * DAY, entry_id=entry_id))

    @rule(points=st.integers(1, 1_500))
    def draw(self, points: int) -> None:
        before = {lot_id: Lot(**vars(x)) for lot_id, x in self.posting.lots.items()}
        entries = len(self.posting.entries)
        if points > self.posting.available:
            with pytest.raises(InsufficientPoints):
                redeem(self.posting, points)
            assert len(self.posting.entries) == entries
            return
        entry_id = redeem(self.posting, points)
        taken = drawn_by(self.posting, entry_id)
        assert all(before[lot_id].released for lot_id in taken)
        latest_drawn = max(expiry_key(before[lot_id]) for lot_id in taken)
        for lot_id, x in self.posting.lots.items():
            if before[lot_id].released and x.remaining > 0:
                # a lot left with points expires no earlier than any lot drawn from
                assert expiry_key(x) >= latest_drawn

    @rule(points=st.integers(0, 1_500), data=st.data())
    def take_back(self, points: int, data: st.DataObject) -> None:
        lots = list(self.posting.lots)
        first_from = data.draw(st.lists(st.sampled_from(lots), max_size=3)) if lots else []
        takeable = self.posting.available + sum(
            self.posting.lots[i].remaining for i in set(first_from)
            if not self.posting.lots[i].released)
        taken, shortfall = take_back(self.posting, points, first_from)
        assert taken + shortfall == points
        assert taken == min(points, takeable)

    @rule()
    def drain(self) -> None:
        self.posting.drain(kind="transfer", reason="merged", source="merge", links=NO_LINKS)
        assert self.posting.balance() == (0, 0)

    @invariant()
    def balance_is_the_start_plus_the_entries(self) -> None:
        posting = self.posting
        assert posting.available + posting.pending == self.start_total + sum(
            e.amount for e in posting.entries)

    @invariant()
    def each_entry_is_what_it_drew_plus_what_it_created(self) -> None:
        posting = self.posting
        for e in posting.entries:
            created = sum(x.points for x in posting.new_lots if x.entry_id == e.entry_id)
            assert e.amount == sum(drawn_by(posting, e.entry_id).values()) + created

    @invariant()
    def balances_are_the_lots_remaining_and_never_negative(self) -> None:
        lots = self.posting.lots.values()
        assert all(x.remaining >= 0 for x in lots)
        assert self.posting.available == sum(x.remaining for x in lots if x.released)
        assert self.posting.pending == sum(x.remaining for x in lots if not x.released)
        assert len({e.entry_id for e in self.posting.entries}) == len(self.posting.entries)

    @invariant()
    def no_lot_left_with_points_is_past_its_expiry(self) -> None:
        assert not any(x.remaining and x.expired(NOW) for x in self.posting.lots.values())


TestPostingSequence = PostingSequence.TestCase
