"""Statements written with named parameters (``:member``), numbered ``$1``, ``$2``... once, when
the module that holds them is imported, and given their values by name.

asyncpg speaks only ``$n``. A statement of 70 numbered parameters assembled from several parts
cannot be read or changed safely; named, each part says what it uses, and a value is passed
under the name the SQL gives it, never by its place in a tuple.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# ``:name`` but not a cast (``x::uuid``): no colon or word character just before it.
_NAME = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Statement:
    """SQL with its parameters numbered, and the name each number stands for."""

    text: str
    names: tuple[str, ...]

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The values in the statement's order; a name without a value is a bug, said so."""
        try:
            return [values[name] for name in self.names]
        except KeyError as missing:
            raise KeyError(f"no value for the statement's parameter :{missing.args[0]}") from None


def named(text: str) -> Statement:
    """``text`` with each ``:name`` replaced by ``$n``, the same name by the same number, in
    order of first use. Only the statement's own text goes in here, never a value."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return Statement(_NAME.sub(number, text), tuple(names))
