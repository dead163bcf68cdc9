"""The OpenAPI document's ``webhooks`` (OpenAPI 3.1): every event type the programme sends, as
the POST a receiver gets, the envelope's ``data`` typed as the type's payload."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from schemas.outbox import EVENT_TYPES

Client = httpx.AsyncClient
ENVELOPE = ["id", "type", "occurred_at", "api_version", "data"]


def _resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    prefix = "#/components/schemas/"
    assert ref.startswith(prefix), ref
    schema: dict[str, Any] = document["components"]["schemas"][ref.removeprefix(prefix)]
    return schema


async def test_the_document_lists_every_event_with_its_envelope_and_payload(
        client: Client) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert set(document["webhooks"]) == set(EVENT_TYPES)
    for type_, payload in EVENT_TYPES.items():
        post = document["webhooks"][type_]["post"]
        assert post["operationId"] == "event_" + type_.replace(".", "_")
        envelope = _resolve(document, post["requestBody"]["content"]["application/json"]
                            ["schema"]["$ref"])
        assert list(envelope["properties"]) == ENVELOPE
        assert envelope["required"] == ENVELOPE
        assert envelope["properties"]["type"] == {"enum": [type_]}
        assert envelope["properties"]["occurred_at"]["format"] == "date-time"
        data = _resolve(document, envelope["properties"]["data"]["$ref"])
        fields = msgspec.structs.fields(payload)
        assert set(data["properties"]) == {f.encode_name for f in fields}
        assert set(data["required"]) == {f.encode_name for f in fields if f.required}


async def test_the_payloads_do_not_take_the_names_of_the_apis_models(client: Client) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    schemas = document["components"]["schemas"]
    # The API's own PurchaseRecorded answer and the event's payload live side by side.
    assert "PurchaseRecorded" in schemas
    assert "PurchaseRecordedData" in schemas
    assert schemas["PurchaseRecorded"] != schemas["PurchaseRecordedData"]
