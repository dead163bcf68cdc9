"""Which staff role sees which console page: the role sets of loyalty/access/roles.py (the
table of docs/security.md), the same ones the API's guards take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from loyalty.access.roles import (
    ADMINS,
    JOB_READERS,
    MARKETING_EDITORS,
    MARKETING_READERS,
    PROFILE_READERS,
)
from schemas.admin import StaffRole

# The roles a staff account may hold, as the wire types name them.
STAFF_ROLES: tuple[str, ...] = get_args(StaffRole)


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
    Page("dashboard", _("Dashboard"), MARKETING_READERS, "/console/dashboard"),
    Page("members", _("Members"), PROFILE_READERS, "/console/members"),
    Page("rules", _("Earning rules"), MARKETING_EDITORS, "/console/rules"),
    Page("tiers", _("Tiers"), MARKETING_EDITORS, "/console/tiers"),
    Page("coupons", _("Coupons"), MARKETING_READERS, "/console/coupons"),
    Page("events", _("Events"), MARKETING_READERS, "/console/events"),
    Page("segments", _("Segments"), MARKETING_READERS, "/console/segments"),
    Page("campaigns", _("Campaigns"), MARKETING_READERS, "/console/campaigns"),
    Page("jobs", _("Jobs"), JOB_READERS, "/console/jobs"),
    Page("import", _("Import"), ADMINS, "/console/import"),
    Page("staff", _("Staff"), ADMINS, "/console/staff"),
    Page("audit", _("Audit log"), ADMINS, "/console/audit"),
    Page("webhooks", _("Webhooks"), ADMINS, "/console/webhooks"),
)


def pages_for(role: str) -> list[Page]:
    return [page for page in PAGES if role in page.roles]
