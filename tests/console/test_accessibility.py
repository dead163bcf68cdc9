"""Every control on every console page has a label a screen reader can read (issue 14: "labels
on every control"): an <input>, <select> or <textarea> is named by a <label for>, by being
inside a <label>, or by aria-label / aria-labelledby. Checked on the HTML of each page without
path parameters, as an admin (who sees every page and every button) on the seeded data."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx
import pytest
from litestar import Litestar

from loyalty.core.settings import Settings
from tests.console.seed import seed
from tests.console.test_console_http import sign_in

UNNAMED_TYPES = {"hidden", "submit", "button", "reset", "image"}


class Controls(HTMLParser):
    """The page's controls that need a name, and the names it gives."""

    def __init__(self) -> None:
        super().__init__()
        self.labelled_ids: set[str] = set()
        self.inside_label = 0
        self.controls: list[tuple[str, dict[str, str | None], bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "label":
            self.inside_label += 1
            if found.get("for"):
                self.labelled_ids.add(str(found["for"]))
        elif tag in {"input", "select", "textarea"} and (
                tag != "input" or (found.get("type") or "text") not in UNNAMED_TYPES):
            self.controls.append((tag, found, self.inside_label > 0))

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self.inside_label:
            self.inside_label -= 1

    def unnamed(self) -> list[str]:
        return [f"<{tag} {attrs}>" for tag, attrs, wrapped in self.controls
                if not wrapped and not attrs.get("aria-label")
                and not attrs.get("aria-labelledby")
                and attrs.get("id") not in self.labelled_ids]


@pytest.fixture
async def seeded(settings: Settings) -> None:
    assert settings.database_url
    await seed(settings.database_url)


@pytest.mark.usefixtures("seeded")
async def test_every_control_on_every_page_has_a_label(
    app: Litestar, client: httpx.AsyncClient,
) -> None:
    await sign_in(client, "admin")
    pages = sorted({route.path for route in app.routes
                    if route.path.startswith("/console") and "{" not in route.path
                    and "GET" in getattr(route, "methods", ())
                    and not route.path.endswith((".csv", "/progress", "/runs"))})
    assert len(pages) >= 15, pages
    unnamed: dict[str, list[str]] = {}
    for path in pages:
        page = await client.get(path)
        assert page.status_code == 200, (path, page.status_code)
        controls = Controls()
        controls.feed(page.text)
        if controls.unnamed():
            unnamed[path] = controls.unnamed()
    assert unnamed == {}


def test_the_check_finds_a_control_without_a_label() -> None:
    controls = Controls()
    controls.feed('<label for="a">A</label><input id="a"><label>B <select></select></label>'
                  '<input aria-label="C"><input type="hidden"><textarea id="d"></textarea>')
    assert controls.unnamed() == ["<textarea {'id': 'd'}>"]
