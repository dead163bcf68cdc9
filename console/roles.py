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
    # What the page is for, in a line (the start page lists the pages with it).
    description: str = ""


def _(message: str) -> str:
    """Marks a label for the catalogue; the template translates it when it renders."""
    return message


# Every page issue 14 lists, in its order. A page a role may not open is not shown to it (a page
# without ``href`` would be shown as coming, so staff learn where it will be).
PAGES = (
    Page("dashboard", _("Dashboard"), MARKETING_READERS, "/console/dashboard",
         _("The programme's figures for a period against the one before, trends, cohorts and"
           " RFM segments.")),
    Page("members", _("Members"), PROFILE_READERS, "/console/members",
         _("Find a member by name, kana, e-mail, phone or number, and see everything about them.")),
    Page("rules", _("Earning rules"), MARKETING_EDITORS, "/console/rules",
         _("The earning rules in force, their editor, a simulation and every version.")),
    Page("tiers", _("Tiers"), MARKETING_EDITORS, "/console/tiers",
         _("The tiers, their thresholds and benefits, and how many members hold each.")),
    Page("coupons", _("Coupons"), MARKETING_READERS, "/console/coupons",
         _("Coupon templates, batches of codes to download, and issuing to a segment.")),
    Page("events", _("Events"), MARKETING_READERS, "/console/events",
         _("Store events: capacity, invitations, reservations and check-ins.")),
    Page("segments", _("Segments"), MARKETING_READERS, "/console/segments",
         _("Groups of members by conditions, with a live count.")),
    Page("campaigns", _("Campaigns"), MARKETING_READERS, "/console/campaigns",
         _("Campaigns to a segment, their launch and their results against a control group.")),
    Page("jobs", _("Jobs"), JOB_READERS, "/console/jobs",
         _("The scheduled jobs, their runs, and running one now.")),
    Page("import", _("Import"), ADMINS, "/console/import",
         _("Members or purchases from a CSV file, with the rows refused and why.")),
    Page("staff", _("Staff"), ADMINS, "/console/staff",
         _("The staff accounts, their roles, and switching one off.")),
    Page("audit", _("Audit log"), ADMINS, "/console/audit",
         _("Who on the staff did or read what, and every till look-up.")),
    Page("webhooks", _("Webhooks"), ADMINS, "/console/webhooks",
         _("Where events are sent, their deliveries, and secret rotation.")),
)


def pages_for(role: str) -> list[Page]:
    return [page for page in PAGES if role in page.roles]
