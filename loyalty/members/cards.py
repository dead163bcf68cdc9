"""Member cards: the short-lived token the app shows as a QR code and the till scans.

A card is a signed token for the card audience, valid for a minute: it cannot be guessed or
forged, a screenshot stops working when it expires, and it opens nothing but a lookup at the
till (a card is never accepted where a member's access token is needed).
"""

from __future__ import annotations

import datetime as dt
import secrets
from uuid import UUID

from loyalty.access.tokens import TokenSigner
from loyalty.core.errors import AuthenticationFailed, InvalidInput

CARD_AUDIENCE = "loyalty:card"
CARD_TTL_SECONDS = 60


class CardExpired(InvalidInput):
    code = "card_expired"


def issue_card(signer: TokenSigner, member_id: UUID) -> tuple[str, dt.datetime]:
    """A card token for ``member_id`` and the moment it stops working."""
    token = signer.issue(member_id, CARD_AUDIENCE, ttl=CARD_TTL_SECONDS,
                         jti=secrets.token_urlsafe(8))
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(
        seconds=CARD_TTL_SECONDS)
    return token, expires


def member_from_card(signer: TokenSigner, token: str) -> UUID:
    """The member a scanned card belongs to; an expired or forged card is refused."""
    try:
        claims = signer.verify(token, audiences=(CARD_AUDIENCE,))
        return UUID(claims["sub"])
    except AuthenticationFailed as exc:
        if "expired" in exc.detail:
            raise CardExpired("this member card has expired: ask for a fresh one",
                              field="card") from None
        raise InvalidInput("this is not a valid member card", field="card",
                           code="card_invalid") from None
    except ValueError:
        raise InvalidInput("this is not a valid member card", field="card",
                           code="card_invalid") from None
