"""Lanes of a batch (loyalty/points/lanes.py): items that write to something in common stay in
one lane in till order; items in different lanes have nothing in common."""

from __future__ import annotations

from collections.abc import Hashable

from hypothesis import given
from hypothesis import strategies as st

from loyalty.points.lanes import lanes


def test_a_members_items_and_a_shared_receipt_join_lanes() -> None:
    touched: list[list[Hashable]] = [
        [("member", "a"), ("receipt", "1")],
        [("member", "b"), ("receipt", "2")],
        [("member", "a"), ("receipt", "3")],
        [("member", "c"), ("receipt", "2")],  # b's receipt: c's items join b's lane
        [("member", "c"), ("receipt", "4")],
        [("member", "d"), ("receipt", "5")],
        [],
    ]
    assert lanes(touched) == [[0, 2], [1, 3, 4], [5], [6]]


def test_a_late_item_can_join_two_lanes_into_one() -> None:
    touched: list[list[Hashable]] = [[("member", "a")], [("member", "b")], [("member", "c")],
               [("member", "c"), ("coupons",)], [("member", "a"), ("coupons",)]]
    assert lanes(touched) == [[0, 2, 3, 4], [1]]


keys = st.lists(st.lists(st.integers(0, 12), max_size=3), max_size=40)


@given(keys)
def test_lanes_partition_the_items_and_only_shared_keys_join_them(
    touched: list[list[int]],
) -> None:
    found = lanes(touched)
    # Every item once; each lane in till order; lanes in the order of their first item.
    assert sorted(n for lane in found for n in lane) == list(range(len(touched)))
    assert all(lane == sorted(lane) for lane in found)
    assert [lane[0] for lane in found] == sorted(lane[0] for lane in found)
    lane_of = {n: i for i, lane in enumerate(found) for n in lane}
    # Items sharing a key are in one lane.
    for a, keys_a in enumerate(touched):
        for b, keys_b in enumerate(touched):
            if set(keys_a) & set(keys_b):
                assert lane_of[a] == lane_of[b]
    # And a lane holds only items connected through shared keys: none is split off.
    for lane in found:
        reached, frontier = {lane[0]}, [lane[0]]
        while frontier:
            item = frontier.pop()
            for other in lane:
                if other not in reached and set(touched[item]) & set(touched[other]):
                    reached.add(other)
                    frontier.append(other)
        assert reached == set(lane)
