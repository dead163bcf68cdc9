"""Bodies of the authentication endpoints."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from schemas.base import Email, Input, OneOf, Output, Password, Phone, Token

# At login any length up to the cap is checked; the policy applies when a password is set.
LoginPassword = Annotated[str, Meta(min_length=1, max_length=128)]


class MemberLogin(OneOf):
    """Either ``email`` or ``phone``, with the password."""

    password: LoginPassword
    email: Email | None = None
    phone: Phone | None = None
    one_of = ("email", "phone")


class StaffLogin(Input):
    email: Email
    password: LoginPassword


class RefreshRequest(Input):
    refresh_token: Token


class LogoutRequest(Input):
    refresh_token: Token


class PasswordChange(Input):
    """The password in use, and the one to use from now on (checked like a new sign-up's)."""

    current_password: LoginPassword
    new_password: Password


class PasswordResetRequest(OneOf):
    """The e-mail address or phone number the member signs in with: the reset goes there."""

    email: Email | None = None
    phone: Phone | None = None
    one_of = ("email", "phone")


class PasswordResetAccepted(Output):
    """The same answer whether or not the address belongs to a member."""

    detail: str


class PasswordResetConfirm(Input):
    """The token the member was sent, and their new password."""

    token: Token
    new_password: Password


class Tokens(Output):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: Literal["Bearer"] = "Bearer"


class Jwks(Output):
    keys: list[dict[str, str]]
