"""The README's configuration table names every setting the service reads, and only those."""

from __future__ import annotations

import re

from loyalty.settings import PREFIX, Settings
from tests.conftest import ROOT


def test_readme_configuration_table_matches_the_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(LOYALTY_[A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))
    expected = {PREFIX + name.upper() for name in Settings.__struct_fields__}
    assert documented == expected


def test_readme_defaults_match_the_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    defaults = Settings()
    for name in Settings.__struct_fields__:
        value = getattr(defaults, name)
        if value is None or isinstance(value, tuple):
            continue
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        row = re.search(rf"^\| `{PREFIX}{name.upper()}` \| `([^`]*)` \|", readme, re.MULTILINE)
        assert row is not None, name
        assert row.group(1) == shown, name
