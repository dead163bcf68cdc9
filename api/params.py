"""Query parameters, typed once: every text parameter is bounded and refuses control
characters, every moment and day is one of the bounded types of ``schemas.base``.

Litestar reads a query parameter's constraints from its ``QueryParameter``, not from a msgspec
``Meta`` inside the type, so the constraints are spelt here, where the test of every route's
parameters (tests/api/test_query_parameters.py) looks for them.
"""

from __future__ import annotations

from typing import Annotated

from litestar.params import QueryParameter

from schemas.base import SINGLE_LINE, Day, Instant, whole

# Keyset pages: a page size, and the ``next_cursor`` of the page before (base64url or digits).
Limit = Annotated[int, QueryParameter(ge=1, le=200, description="items per page")]
Cursor = Annotated[str | None, QueryParameter(
    min_length=1, max_length=200, pattern=whole(r"[A-Za-z0-9_-]+"),
    description="the next_cursor of the page before")]
# A name, kana, e-mail, phone or member number to search by.
SearchText = Annotated[str | None, QueryParameter(
    min_length=1, max_length=100, pattern=SINGLE_LINE,
    description="the start of a name or kana, an e-mail address, phone or member number")]
Since = Annotated[Instant | None, QueryParameter(
    description="RFC 3339 with its UTC offset, e.g. 2026-04-01T00:00:00+09:00")]
BusinessDay = Annotated[Day, QueryParameter(description="A business day, YYYY-MM-DD")]
# What a till reads from a member's card, types from it, or asks the member for.
CardParam = Annotated[str | None, QueryParameter(
    min_length=16, max_length=1024, pattern=whole(r"[A-Za-z0-9_.-]+"),
    description="the token of the member card the app shows")]
NumberParam = Annotated[str | None, QueryParameter(
    min_length=1, max_length=20, pattern=whole(r"[0-9]+"), description="the member number")]
PhoneParam = Annotated[str | None, QueryParameter(
    min_length=3, max_length=32, pattern=SINGLE_LINE,
    description="the member's phone number, as typed")]
