"""Request bodies decoded strictly, once: JSON only, UTF-8 only, each key once, straight into the
handler's type with the bounded types of ``schemas.base`` checked on the way."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from litestar.exceptions import ValidationException
from litestar.types import Empty

from api.deps import AnyRequest
from api.errors import problem
from schemas.base import decode_edge

_JSON_TYPES = ("application/json",)


class DuplicateKey(ValueError):
    pass


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    decoded = dict(pairs)
    if len(decoded) != len(pairs):
        keys = [key for key, _ in pairs]
        raise DuplicateKey(next(key for key in keys if keys.count(key) > 1))
    return decoded


def _is_json(content_type: str) -> bool:
    return content_type in _JSON_TYPES or (
        content_type.startswith("application/") and content_type.endswith("+json"))


def _invalid(request: AnyRequest, message: str) -> ValidationException:
    return ValidationException(f"Validation failed for {request.method} {request.url.path}",
                               extra=[{"message": message, "source": "body"}])


class StrictJSONRequest(AnyRequest):
    """Decodes a JSON body straight into the handler's ``data`` type, strictly.

    Litestar converts bodies in lax mode (meant for query strings), which would take
    ``"percent": "150"`` for 150, parses any body as JSON whatever its content type, and lets
    the last of two equal keys win: a till sending ``"total"`` twice would be recorded with
    whichever came last. Here a body must say it is JSON, be UTF-8, and name each key once.
    """

    async def json(self) -> object:
        if self._json is Empty and self._connection_state.json is Empty:
            body = await self.body()
            data = self.route_handler.parsed_fn_signature.parameters.get("data")
            if body:
                self._check_content_type()
            target: Any = data.annotation if data is not None else Any
            self._json = self._connection_state.json = self._decode(body or b"null", target)
        return await super().json()

    def _check_content_type(self) -> None:
        media_type, options = self.content_type
        charset = options.get("charset", "utf-8").lower()
        if not _is_json(media_type) or charset not in ("utf-8", "utf8"):
            raise problem(415, "unsupported_media_type",
                          "send the body as JSON in UTF-8, with the header "
                          "Content-Type: application/json")

    def _decode(self, body: bytes, target: Any) -> object:
        try:
            # msgspec checks only the strings it decodes; a body is UTF-8 as a whole or not.
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _invalid(self, f"the body is not valid UTF-8 (byte {exc.start}): send JSON "
                                 "text in UTF-8") from None
        try:
            decoded = msgspec.json.decode(body, type=target, dec_hook=decode_edge)
        except msgspec.DecodeError as exc:
            raise _invalid(self, str(exc)) from None
        except RecursionError:
            raise _invalid(self, "JSON nested too deeply") from None
        try:
            # msgspec cannot tell that a key came twice; the standard parser's pairs can.
            json.loads(body, object_pairs_hook=_refuse_duplicates)
        except RecursionError:
            raise _invalid(self, "JSON nested too deeply") from None
        except DuplicateKey as key:
            raise _invalid(self, f"the key {str(key)[:64]!r} appears twice in one object: "
                                 "send each key once") from None
        return decoded
