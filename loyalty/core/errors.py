"""One hierarchy of domain errors; ``api.errors`` maps each class to problem+json once."""

from __future__ import annotations


class LoyaltyError(Exception):
    """Base of every error the domain raises on purpose. ``code`` is stable and public."""

    code = "loyalty_error"

    def __init__(self, detail: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        if code is not None:
            self.code = code


class InvalidInput(LoyaltyError):
    """Input that passed the wire schema but breaks a business rule (bad phone, bad e-mail)."""

    code = "invalid_input"


class NotFound(LoyaltyError):
    code = "not_found"


class Conflict(LoyaltyError):
    """The request clashes with existing state (a taken e-mail, a duplicate store code)."""

    code = "conflict"


class AuthenticationFailed(LoyaltyError):
    """Credentials are missing, wrong, expired or revoked."""

    code = "authentication_failed"


class PermissionDenied(LoyaltyError):
    """The principal is known but may not do this."""

    code = "permission_denied"


class RateLimited(LoyaltyError):
    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ConfigurationError(LoyaltyError):
    """A setting is missing or malformed; raised at start, naming the variable."""

    code = "configuration_error"


class InsufficientPoints(Conflict):
    """A redemption or deduction larger than the points available."""

    code = "insufficient_points"


class ServiceUnavailable(LoyaltyError):
    """A dependency failed mid-request (the database connection was lost); safe to retry."""

    code = "unavailable"
