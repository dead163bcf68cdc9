"""Every error leaves as application/problem+json (RFC 9457) with a stable ``type``; mapped once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException

from loyalty.core import errors
from loyalty.core.logs import REQUEST_ID

log = logging.getLogger(__name__)

PROBLEM_BASE = "urn:loyalty:problem:"

_STATUS: dict[type[errors.LoyaltyError], int] = {
    errors.InvalidInput: 422,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.AuthenticationFailed: 401,
    errors.PermissionDenied: 403,
    errors.RateLimited: 429,
    errors.ServiceUnavailable: 503,
}
_TITLES = {
    400: "Bad request", 401: "Not authenticated", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 413: "Request body too large",
    415: "Unsupported media type", 422: "Unprocessable input", 429: "Too many requests",
    500: "Internal error", 503: "Service unavailable",
}
_HTTP_CODES = {
    400: "bad_request", 401: "authentication_failed", 403: "permission_denied", 404: "not_found",
    405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
    429: "rate_limited", 500: "internal_error", 503: "unavailable",
}


def problem(status: int, code: str, detail: str, *, headers: dict[str, str] | None = None,
            extra: dict[str, Any] | None = None) -> ProblemDetailsException:
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="loyalty"', **(headers or {})}
    # The request id lets a support desk find the exchange in the logs from what the user saw.
    return ProblemDetailsException(
        status_code=status, type_=PROBLEM_BASE + code, title=_TITLES.get(status, "Error"),
        detail=detail, headers=headers, extra={**(extra or {}), "request_id": REQUEST_ID.get()},
    )


def _from_domain(exc: errors.LoyaltyError) -> ProblemDetailsException:
    status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 500)
    # Any refusal that knows when trying again makes sense says so (rate limits, a key in flight).
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    extra = {"field": exc.field} if exc.field else None
    return problem(status, exc.code, exc.detail, headers=headers, extra=extra)


# What litestar says, as a 500 of its own, when the client goes away while its body is still
# arriving: nothing failed here and nobody is left to answer, so it is neither logged nor
# counted as a server error.
_CLIENT_LEFT = "client disconnected prematurely"


def _from_http(exc: HTTPException) -> ProblemDetailsException:
    if isinstance(exc, ProblemDetailsException):
        return exc
    status = exc.status_code
    if isinstance(exc, ValidationException) or status == 400:
        errors_ = exc.extra if isinstance(exc.extra, list) else None
        detail = "; ".join(str(e.get("message")) for e in errors_ or [] if isinstance(e, Mapping))
        return problem(400, "validation_failed", detail or exc.detail,
                       extra={"errors": errors_} if errors_ else None)
    if status == 500 and exc.detail == _CLIENT_LEFT:
        log.info("the client left before its request body arrived whole")
        return problem(400, "request_incomplete",
                       "the request ended before its body arrived whole: send it again")
    if status >= 500:
        log.error("HTTP %s: %s", status, exc.detail)
        return problem(status, _HTTP_CODES.get(status, "internal_error"),
                       "the server could not complete the request")
    return problem(status, _HTTP_CODES.get(status, "http_error"), exc.detail, headers=exc.headers)


def _from_unexpected(exc: Exception) -> ProblemDetailsException:
    if isinstance(exc, RecursionError) and "deserializing" in str(exc):
        # msgspec stops decoding JSON nested deeper than the stack allows: the client's doing.
        return problem(400, "validation_failed", "JSON nested too deeply")
    log.exception("unhandled error", exc_info=exc)
    return problem(500, "internal_error", "the server could not complete the request")


def _from_timeout(exc: Exception) -> ProblemDetailsException:
    # The server's statement_timeout cut a query short (a segment over a very large
    # population, a lock waited on too long): nothing was written; it may work later.
    log.warning("statement cancelled: %r", exc)
    return problem(503, "unavailable", "the request took too long and was stopped; retry later",
                   headers={"Retry-After": "5"})


def _from_refused_value(exc: Exception) -> ProblemDetailsException:
    # PostgreSQL refused a value the request carried (out of range, not representable): a
    # bound missing from a schema. Nothing was written; the log says which, to add the bound.
    log.error("PostgreSQL refused a value from a request (a bound is missing): %r", exc)
    return problem(422, "value_out_of_range",
                   "a value in the request is outside what can be stored: use smaller numbers "
                   "or shorter text")


def _from_constraint(exc: Exception) -> ProblemDetailsException:
    # A constraint caught what a check in the code should have: still the client's conflict.
    log.error("a constraint refused a request (a check is missing): %r", exc)
    return problem(409, "conflict",
                   "the request conflicts with what is stored (a reference to something that "
                   "does not exist, or a duplicate): check the ids and values it names")


def _from_lost_connection(exc: Exception) -> ProblemDetailsException:
    # The database went away mid-request (restart, failover, a killed backend). Whatever was
    # under way was one transaction and is rolled back; a retry with the same key is safe.
    log.warning("database connection lost: %r", exc)
    return problem(503, "unavailable", "the database connection was lost; retry the request",
                   headers={"Retry-After": "1"})


# What asyncpg raises when the connection, not the query, failed. InternalClientError ("cannot
# switch to state …; another operation is in progress") is a pooled connection whose backend was
# terminated while it sat idle: the FATAL message arrived, the end of the socket not yet.
LOST_CONNECTION: tuple[type[Exception], ...] = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.InterfaceError,
    ConnectionError,
)


def _from_group(group: BaseExceptionGroup[Exception]) -> ProblemDetailsException:
    # Litestar gathers what dependencies raise while cleaning up (a commit on a connection that
    # was lost meanwhile) into an ExceptionGroup: answer for what is inside it.
    leaves = _leaves(group)
    lost = next((exc for exc in leaves if isinstance(exc, LOST_CONNECTION)), None)
    return to_problem(lost or leaves[0])


def _leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    found: list[Exception] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


_MAPPERS: dict[type[Exception], Callable[[Any], ProblemDetailsException]] = {
    errors.LoyaltyError: _from_domain,
    HTTPException: _from_http,
    **dict.fromkeys(LOST_CONNECTION, _from_lost_connection),
    asyncpg.exceptions.QueryCanceledError: _from_timeout,
    asyncpg.exceptions.DataError: _from_refused_value,
    asyncpg.exceptions.IntegrityConstraintViolationError: _from_constraint,
    ExceptionGroup: _from_group,
    Exception: _from_unexpected,
}


def to_problem(exc: Exception) -> ProblemDetailsException:
    """The problem an exception is answered with: the mapper of its nearest class."""
    mapper = next(_MAPPERS[kind] for kind in type(exc).__mro__ if kind in _MAPPERS)
    return mapper(exc)


def problem_details_config() -> ProblemDetailsConfig:
    return ProblemDetailsConfig(exception_to_problem_detail_map=dict(_MAPPERS))
