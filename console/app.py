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

from console.audit import ROUTES as AUDIT_ROUTES
from console.backtest import BACKTEST_ROUTES
from console.campaigns import (
    campaign_page,
    campaigns_page,
    create_campaign_submit,
    launch_page,
    launch_submit,
    new_campaign_page,
    results_page,
)
from console.coupons import (
    confirm_issue,
    coupon_page,
    coupons_page,
    create_coupon,
    download_batch,
    generate_batch,
    issue_to_segment,
    new_coupon_page,
)
from console.dashboard import dashboard_page, rfm_members_page
from console.events import (
    create_event_submit,
    event_page,
    events_page,
    invite_segment,
    new_event_page,
)
from console.i18n import LANGUAGES
from console.imports import (
    import_page,
    import_progress_partial,
    import_rejects,
    import_status_page,
    import_upload,
)
from console.jobs import job_page, job_run, job_run_confirm, job_runs_partial, jobs_page
from console.member import (
    adjust_member_points,
    cancel_member_erasure,
    change_status,
    erase_member_data,
    erasure_form,
    member_history,
    member_page,
    merge,
    merge_comparison,
    status_form,
)
from console.members import members_page
from console.pages import Refused, cookie, render
from console.rules import rules_diff_page, rules_editor, rules_page, save_rules, simulate_rules
from console.segments import (
    build_segment,
    create_segment_submit,
    new_segment_page,
    preview_partial,
    segment_page,
    segments_page,
    update_segment_submit,
)
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
from console.staff import ROUTES as STAFF_ROUTES
from console.tiers import save_tiers, tiers_editor, tiers_page
from console.webhooks import ROUTES as WEBHOOK_ROUTES
from loyalty.access.addresses import client_address
from loyalty.access.sign_in import account_key, limit_address, verify_password
from loyalty.access.staff import find_staff_login
from loyalty.core.db import transaction
from loyalty.core.errors import (
    AuthenticationFailed,
    LoyaltyError,
    PermissionDenied,
    RateLimited,
)
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
    """Check the password as the API's staff log-in does, under the same limits (attempts per
    client address, failures per account, counted under the same keys), then open a session."""
    check_csrf(request, request.cookies.get(CSRF_COOKIE), data.csrf_token)
    svc = services(request)
    settings = svc.settings
    try:
        await limit_address(svc.limiter, settings,
                            client_address(request.scope, settings.trusted_proxies))
    except RateLimited:
        return render(request, "sign_in.html", status_code=429, error="address_limited",
                      email=data.email)
    try:
        async with transaction(svc.pool) as conn:
            row = await find_staff_login(conn, data.email)
        await verify_password(
            svc.limiter, svc.passwords, settings,
            key=account_key("staff", row["staff_id"] if row else None, email=data.email),
            stored_hash=row["password_hash"] if row else None, password=data.password)
    except RateLimited:
        return render(request, "sign_in.html", status_code=429, error="limited",
                      email=data.email)
    except AuthenticationFailed:
        return render(request, "sign_in.html", status_code=401, error="wrong", email=data.email)
    assert row is not None
    secret, _ = await sign_in(svc, staff_id=row["staff_id"], email=normalize_email(data.email),
                              role=row["role"], display_name=row["display_name"])
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
        member_page, member_history, adjust_member_points, status_form, change_status,
        merge_comparison, merge, erasure_form, erase_member_data, cancel_member_erasure,
        rules_page, rules_editor, save_rules, simulate_rules, rules_diff_page, *BACKTEST_ROUTES,
        tiers_page, tiers_editor, save_tiers,
        coupons_page, new_coupon_page, create_coupon, coupon_page, generate_batch, download_batch,
        confirm_issue, issue_to_segment,
        events_page, new_event_page, create_event_submit, event_page, invite_segment,
        segments_page, new_segment_page, segment_page, preview_partial, build_segment,
        create_segment_submit, update_segment_submit,
        campaigns_page, new_campaign_page, create_campaign_submit, campaign_page, launch_page,
        launch_submit, results_page,
        rfm_members_page, jobs_page, job_page, job_runs_partial, job_run_confirm, job_run,
        import_page, import_upload, import_status_page, import_progress_partial, import_rejects,
        *WEBHOOK_ROUTES, *STAFF_ROUTES, *AUDIT_ROUTES,
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
