"""Lanes: the items of an offline till's batch that must keep their till order among themselves.

Two items of one batch depend on each other's order when they write to something in common:
one member's ledger (the first sale's points pay for the second's redemption, the first may
reach the tier the second earns at), one receipt (the first recorded is the sale, the second a
duplicate), or the coupons (a single-use code, a coupon's budget: the first to use it has it).
Everything an item touches is named by a hashable key; items that share a key, directly or
through others, go in one lane, in till order. Different lanes touch nothing in common, so
they may be written side by side, and their purchases share group commits
(docs/decisions/0023-batch-lanes.md).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def lanes(touches: Sequence[Sequence[Hashable]]) -> list[list[int]]:
    """The items (by index) in lanes: each lane the items connected by a shared key, in their
    order; the lanes in the order of their first item. An item touching nothing is a lane of
    its own."""
    parent = list(range(len(touches)))

    def root(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    first_toucher: dict[Hashable, int] = {}
    for item, keys in enumerate(touches):
        for key in keys:
            other = first_toucher.setdefault(key, item)
            a, b = root(item), root(other)
            if a != b:
                # The earlier item's root stays the root: a lane is named by its first item.
                parent[max(a, b)] = min(a, b)
    grouped: dict[int, list[int]] = {}
    for item in range(len(touches)):
        grouped.setdefault(root(item), []).append(item)
    return list(grouped.values())
