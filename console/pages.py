"""Rendering a console page: the layout's context (who is signed in, the navigation, the
language, the CSRF token) and the HTML response."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from litestar import Response
from litestar.datastructures import Cookie
from litestar.enums import MediaType

from console.i18n import Language, environment, language_or
from console.roles import pages_for
from console.services import AnyRequest, services
from console.session import (
    CSRF_COOKIE,
    LANGUAGE_COOKIE,
    SESSION_COOKIE,
    ConsoleSession,
    current_session,
    new_token,
)

_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
# A page names its own scripts and styles only: no inline script, no other origin.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def language_of(request: AnyRequest) -> Language:
    """The staff member's pick (a cookie), else the configured default."""
    return language_or(request.cookies.get(LANGUAGE_COOKIE),
                       services(request).settings.console_language)


def cookie(request: AnyRequest, key: str, value: str, *, max_age: int | None = None) -> Cookie:
    """The console's cookies: sent only to /console, never to scripts or other sites, and only
    over TLS when the console is served over it."""
    return Cookie(key=key, value=value, path="/console", httponly=True, samesite="strict",
                  secure=request.url.scheme == "https", max_age=max_age)


def render(request: AnyRequest, template: str, *, session: ConsoleSession | None = None,
           status_code: int = 200, cookies: list[Cookie] | None = None,
           **context: Any) -> Response[str]:
    """``template`` in the staff member's language. Without a session the forms carry the CSRF
    cookie's token, set here when the browser has none yet."""
    cookies = list(cookies or [])
    if session is not None:
        csrf = session.csrf_token
    else:
        kept = request.cookies.get(CSRF_COOKIE) or ""
        # Only a token of the shape this module makes goes into a page (a cookie set by
        # someone else could carry markup or JSON into the htmx headers).
        csrf = kept if _TOKEN.fullmatch(kept) else new_token()
        if kept != csrf:
            cookies.append(cookie(request, CSRF_COOKIE, csrf))
    language = language_of(request)
    html = environment(language).get_template(template).render(
        session=session, csrf_token=csrf, path=request.url.path,
        pages=pages_for(session.role) if session else [],
        timezone=services(request).settings.timezone, **context)
    return Response(html, status_code=status_code, media_type=MediaType.HTML,
                    headers=_SECURITY_HEADERS, cookies=cookies)


class Refused(Exception):
    """A signed-in staff member asked for a page or an action their role may not use: the
    router answers with the 403 page, the navigation still shown."""

    def __init__(self, session: ConsoleSession) -> None:
        super().__init__(session.role)
        self.session = session


async def staff_session(request: AnyRequest, roles: Collection[str]) -> ConsoleSession:
    """The signed-in staff member, when their role is one of ``roles`` (a set of
    loyalty/access/roles.py, the one the API's guard for the same data takes); raises
    SignInRequired without a session and Refused for another role."""
    session = await current_session(services(request), request.cookies.get(SESSION_COOKIE))
    if session.role not in roles:
        raise Refused(session)
    return session
