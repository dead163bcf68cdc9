"""Which staff role sees which console page: the API's role table (api/roles.py, the table of
docs/security.md), restated here because the console does not import the API;
tests/console/test_roles.py holds the two equal."""

from __future__ import annotations

from dataclasses import dataclass

# The API's columns this slice uses.
CONTACT_READERS = ("admin", "support")
PROFILE_READERS = ("admin", "support", "marketer")
MARKETING_READERS = ("admin", "marketer", "analyst")
MARKETING_EDITORS = ("admin", "marketer")
JOB_READERS = ("admin", "analyst")
ADMINS = ("admin",)
STAFF_ROLES = ("admin", "marketer", "analyst", "support")


@dataclass(frozen=True, slots=True)
class Page:
    """A page of the navigation: ``href`` None while a later session has not built it."""

    key: str
    label: str
    roles: tuple[str, ...]
    href: str | None = None


def _(message: str) -> str:
    """Marks a label for the catalogue; the template translates it when it renders."""
    return message


# Every page issue 14 lists, in its order. A page a role may not open is not shown to it; one
# not built yet is shown as coming, so staff learn where it will be.
PAGES = (
    Page("dashboard", _("Dashboard"), MARKETING_READERS),
    Page("members", _("Members"), PROFILE_READERS, "/console/members"),
    Page("rules", _("Earning rules"), MARKETING_EDITORS),
    Page("tiers", _("Tiers"), MARKETING_EDITORS),
    Page("coupons", _("Coupons"), MARKETING_READERS),
    Page("events", _("Events"), MARKETING_READERS),
    Page("segments", _("Segments"), MARKETING_READERS),
    Page("campaigns", _("Campaigns"), MARKETING_READERS),
    Page("jobs", _("Jobs"), JOB_READERS),
    Page("import", _("Import"), ADMINS),
    Page("staff", _("Staff"), ADMINS),
    Page("audit", _("Audit log"), ADMINS),
    Page("webhooks", _("Webhooks"), ADMINS),
)


def pages_for(role: str) -> list[Page]:
    return [page for page in PAGES if role in page.roles]
