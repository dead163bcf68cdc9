"""The settings tables of the README and of docs/operations.md name every setting the service
reads, and only those, with the defaults the code has."""

from __future__ import annotations

import re

import pytest

from loyalty.core.settings import PREFIX, Settings
from tests.conftest import ROOT

TABLES = ["README.md", "docs/operations.md"]


def _rows(document: str) -> dict[str, str]:
    """Each ``| `LOYALTY_X` | default | ... |`` row: the variable and its default cell."""
    text = (ROOT / document).read_text()
    return dict(re.findall(r"^\| `(LOYALTY_[A-Z0-9_]+)` \| ([^|]*) \|", text, re.MULTILINE))


@pytest.mark.parametrize("document", TABLES)
def test_the_settings_table_names_every_setting_and_only_those(document: str) -> None:
    expected = {PREFIX + name.upper() for name in Settings.__struct_fields__}
    documented = set(_rows(document))
    assert sorted(expected - documented) == [], "missing"
    assert sorted(documented - expected) == [], "not a setting"


@pytest.mark.parametrize("document", TABLES)
def test_the_settings_table_shows_the_defaults_of_the_code(document: str) -> None:
    rows = _rows(document)
    defaults = Settings()
    for name in Settings.__struct_fields__:
        value = getattr(defaults, name)
        if value is None or isinstance(value, tuple):
            continue
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        # The default cell starts with the value itself; words may follow ("(30 days)").
        cell = rows[PREFIX + name.upper()]
        assert cell.startswith(f"`{shown}`"), (name, cell)
