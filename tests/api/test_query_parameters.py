"""Every route's query and header parameters are typed as api/params.py types them: text bounded
and refusing control characters, times and days of the bounded types. A parameter added
without that fails here, before a fuzzer finds it."""

from __future__ import annotations

import datetime as dt
import re
import typing
from typing import Any

from litestar import Litestar
from litestar.params import ParameterKwarg

from schemas.base import EDGE_TYPES


def _parameters(app: Litestar) -> list[tuple[str, str, Any, ParameterKwarg | None]]:
    found = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if handler.include_in_schema is False:
                continue
            for name, field in handler.parsed_fn_signature.parameters.items():
                kwarg = field.kwarg_definition
                if isinstance(kwarg, ParameterKwarg) and kwarg.query is None and \
                        kwarg.header is None and field.name in route.path_parameters:
                    continue
                if name in ("data", "request", "state", "scope") or (
                        kwarg is not None and not isinstance(kwarg, ParameterKwarg)):
                    continue
                if name in route.path_parameters:
                    continue
                found.append((route.path, name, field.annotation, kwarg))
    return found


def _kinds(annotation: Any) -> set[Any]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _kinds(args[0])
    if args and typing.get_origin(annotation) in (typing.Union, __import__("types").UnionType):
        return set().union(*(_kinds(arg) for arg in args))
    return {annotation}


def test_every_text_parameter_refuses_control_characters(app: Litestar) -> None:
    loose = []
    for path, name, annotation, kwarg in _parameters(app):
        if str not in _kinds(annotation):
            continue
        pattern = kwarg.pattern if kwarg is not None else None
        if pattern is None or kwarg is None or kwarg.max_length is None or any(
                re.search(pattern, f"ok{c}") for c in ("\x00", "\x1f", "\n", "\x85")):
            loose.append(f"{path} {name}")
    assert loose == []


def test_every_time_parameter_is_one_of_the_bounded_types(app: Litestar) -> None:
    unbounded = [f"{path} {name}" for path, name, annotation, _ in _parameters(app)
                 if _kinds(annotation) & {dt.datetime, dt.date}
                 and not _kinds(annotation) & set(EDGE_TYPES)]
    assert unbounded == []


def test_the_parameters_are_found_at_all(app: Litestar) -> None:
    names = {(path, name) for path, name, _, _ in _parameters(app)}
    assert ("/v1/members", "q") in names
    assert ("/v1/members", "joined_from") in names
    assert ("/v1/pos/members/lookup", "number") in names
