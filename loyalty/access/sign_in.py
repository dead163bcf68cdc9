"""The limits every sign-in form shares, the API's and the console's alike: attempts per client
address (whoever the caller claims to be), and wrong passwords per account, counted under one
key however the account was named."""

from __future__ import annotations

from uuid import UUID

from loyalty.access.passwords import Passwords
from loyalty.access.ratelimit import RateLimiter
from loyalty.core.errors import AuthenticationFailed, InvalidInput, RateLimited
from loyalty.core.normalize import normalize_email, normalize_phone, normalize_text
from loyalty.core.settings import Settings

WRONG = "the e-mail address, phone number or password is wrong"


async def limit_address(limiter: RateLimiter, settings: Settings, address: str) -> None:
    """Counts one attempt from ``address``; raises RateLimited past the per-minute limit."""
    wait = await limiter.hit(f"sign-in:{address}", limit=settings.login_rate_limit_per_minute,
                             period_seconds=60)
    if wait:
        raise RateLimited("too many sign-in attempts from this address", retry_after=wait)


def account_key(kind: str, account_id: UUID | None, *, email: str | None = None,
                phone: str | None = None, region: str = "JP") -> str:
    """The key wrong passwords are counted under: the account when the identifier names one,
    else the identifier as the account would store it, so ``080-2345-6789`` and
    ``+81 80 2345 6789`` are counted together whether or not anyone has that number."""
    if account_id is not None:
        return f"login:{kind}:{account_id}"
    try:
        identifier = normalize_phone(phone, region) if phone is not None \
            else normalize_email(email or "")
    except InvalidInput:
        # Names no account anyone could hold; still counted, as typed (normalised text).
        identifier = normalize_text(phone or email or "").lower()
    return f"login:{kind}:{identifier}"


async def verify_password(limiter: RateLimiter, passwords: Passwords, settings: Settings, *,
                          key: str, stored_hash: str | None, password: str) -> None:
    """Checks a password under the per-account failure limit that stops guessing: raises
    RateLimited while the account's failures are over it, AuthenticationFailed when wrong."""
    window = dict(limit=settings.login_failures_per_account,
                  period_seconds=settings.login_failure_window_seconds)
    wait = await limiter.peek(key, **window)
    if wait:
        raise RateLimited("too many wrong passwords for this account: try again after the time in"
                          " Retry-After; a member may reset the password instead"
                          " (POST /v1/auth/member/password-reset), which lets them in at once",
                          retry_after=wait)
    if not await passwords.verify(stored_hash, password) or stored_hash is None:
        await limiter.hit(key, **window)
        raise AuthenticationFailed(WRONG, code="invalid_credentials")
