"""The console's router, mounted by ``create_app`` under /console: sign-in, sign-out, the
language switch, the pages, their static files, and the error pages a browser reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from litestar import Response, Router, get, post
from litestar.params import QueryParameter, URLEncodedBody
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from msgspec import Struct

from console.dashboard import dashboard_page
from console.i18n import LANGUAGES
from console.members import members_page
from console.pages import Refused, cookie, render
from console.services import AnyRequest, services
from console.session import (
    CSRF_COOKIE,
    LANGUAGE_COOKIE,
    SESSION_COOKIE,
    CSRFRefused,
    SignInRequired,
    check_csrf,
    current_session,
    end_session,
    sign_in,
)
from console.webhooks import ROUTES as WEBHOOK_ROUTES
from loyalty.access.staff import find_staff_login
from loyalty.core.db import transaction
from loyalty.core.errors import LoyaltyError, PermissionDenied
from loyalty.core.normalize import normalize_email
from schemas.base import whole

STATIC = Path(__file__).parent / "static"
SIGN_IN = "/console/sign-in"
_YEAR = 365 * 86_400
# Why the sign-in page is shown (signed_out, expired, ended): a word, nothing else.
Reason = Annotated[str | None, QueryParameter(max_length=20, pattern=whole(r"[a-z_]*"))]


class SignInForm(Struct):
    email: str = ""
    password: str = ""
    csrf_token: str = ""


class LanguageForm(Struct):
    language: str = ""
    back: str = "/console"
    csrf_token: str = ""


class CSRFForm(Struct):
    csrf_token: str = ""


def _back_within_console(path: str) -> str:
    """Where to return after a form: a console path only, never another site."""
    return path if path.startswith("/console") and not path.startswith("//") else "/console"


@get("/", name="console:home")
async def home(request: AnyRequest) -> Response[str]:
    """The start page: who is signed in, and the navigation."""
    session = await current_session(services(request), request.cookies.get(SESSION_COOKIE))
    return render(request, "home.html", session=session)


@get("/sign-in")
async def sign_in_page(request: AnyRequest, reason: Reason = None) -> Response[str]:
    return render(request, "sign_in.html", reason=reason)


@post("/sign-in", status_code=303)
async def sign_in_submit(
    request: AnyRequest, data: URLEncodedBody[SignInForm]
) -> Response[Any]:
    """Check the password as the API's staff log-in does, under the same per-account limit of
    failures (counted under the same key), then open a session."""
    check_csrf(request, request.cookies.get(CSRF_COOKIE), data.csrf_token)
    svc = services(request)
    settings = svc.settings
    async with transaction(svc.pool) as conn:
        row = await find_staff_login(conn, data.email)
    key = f"login:staff:{row['staff_id']}" if row else None
    window = dict(limit=settings.login_failures_per_account,
                  period_seconds=settings.login_failure_window_seconds)
    if key and await svc.limiter.peek(key, **window):
        return render(request, "sign_in.html", status_code=429, error="limited",
                      email=data.email)
    stored = row["password_hash"] if row else None
    if not await svc.passwords.verify(stored, data.password) or row is None:
        if key:
            await svc.limiter.hit(key, **window)
        return render(request, "sign_in.html", status_code=401, error="wrong", email=data.email)
    secret, _ = await sign_in(svc, staff_id=row["staff_id"], email=normalize_email(data.email),
                              role=row["role"])
    return Redirect("/console", status_code=303,
                    cookies=[cookie(request, SESSION_COOKIE, secret)])


@post("/sign-out", status_code=303)
async def sign_out(request: AnyRequest, data: URLEncodedBody[CSRFForm]) -> Response[Any]:
    secret = request.cookies.get(SESSION_COOKIE)
    session = await current_session(services(request), secret)
    check_csrf(request, session.csrf_token, data.csrf_token)
    assert secret is not None
    await end_session(services(request), secret, session)
    response = Redirect(f"{SIGN_IN}?reason=signed_out", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@post("/language", status_code=303)
async def choose_language(
    request: AnyRequest, data: URLEncodedBody[LanguageForm]
) -> Response[Any]:
    """The staff member's language, kept in a cookie so the sign-in page speaks it too."""
    secret = request.cookies.get(SESSION_COOKIE)
    expected: str | None
    try:
        expected = (await current_session(services(request), secret)).csrf_token
    except SignInRequired:
        expected = request.cookies.get(CSRF_COOKIE)
    check_csrf(request, expected, data.csrf_token)
    back = _back_within_console(data.back)
    if data.language not in LANGUAGES:
        return Redirect(back, status_code=303)
    return Redirect(back, status_code=303, cookies=[
        cookie(request, LANGUAGE_COOKIE, data.language, max_age=_YEAR)])


def _signed_out(request: AnyRequest, exc: SignInRequired) -> Response[Any]:
    if request.headers.get("hx-request"):
        # htmx follows a redirect inside the swapped part; the whole page must go.
        return Response("", status_code=401, headers={"HX-Redirect": SIGN_IN})
    reason = f"?reason={quote(exc.reason)}" if exc.reason else ""
    response = Redirect(SIGN_IN + reason, status_code=303)
    if exc.reason:
        response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


def _csrf_refused(request: AnyRequest, _: CSRFRefused) -> Response[str]:
    return render(request, "error.html", status_code=403, error="csrf")


def _refused(request: AnyRequest, _: PermissionDenied) -> Response[str]:
    return render(request, "error.html", status_code=403, error="forbidden")


def _role_refused(request: AnyRequest, exc: Refused) -> Response[str]:
    return render(request, "error.html", session=exc.session, status_code=403, error="forbidden")


def _failed(request: AnyRequest, exc: LoyaltyError) -> Response[str]:
    return render(request, "error.html", status_code=400, error="invalid", detail=exc.detail)


router = Router(
    path="/console",
    route_handlers=[
        home, sign_in_page, sign_in_submit, sign_out, choose_language, members_page, dashboard_page,
        *WEBHOOK_ROUTES,
        create_static_files_router(path="/static", directories=[STATIC], name="console:static",
                                   include_in_schema=False),
    ],
    exception_handlers={
        SignInRequired: _signed_out,
        CSRFRefused: _csrf_refused,
        PermissionDenied: _refused,
        Refused: _role_refused,
        LoyaltyError: _failed,
    },
    include_in_schema=False,
)
