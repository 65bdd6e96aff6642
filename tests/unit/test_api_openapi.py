"""The OpenAPI documents say what the APIs do: key needed except on public routes, patterns
that accept exactly what the plate rules accept, documented errors."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.api import MAX_BATCH, create_ingest_app
from platereg.settings import load_settings
from registry.api import (
    CURSOR_PATTERN,
    RAW_JURISDICTION_PATTERN,
    RAW_PLATE_PATTERN,
    create_registry_app,
)
from schemas.plates import InvalidPlate, normalize_jurisdiction, normalize_plate

PUBLIC = {"/healthz", "/readyz", "/metrics"}
#: Public in the registry API only: the sign-in link is the credential.
REGISTRY_PUBLIC = {"/v1/owner-sessions/link"}


@pytest.fixture(scope="module")
def documents() -> dict[str, dict]:
    settings = load_settings()
    return {"registry": create_registry_app(settings, purge_every=None).openapi(),
            "ingest": create_ingest_app(settings).openapi()}


def test_every_route_but_the_public_ones_needs_the_key(documents) -> None:
    for name, doc in documents.items():
        assert "security" not in doc, name  # no global entry: it would cover the probes
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        seen_public = set()
        public = PUBLIC | (REGISTRY_PUBLIC if name == "registry" else set())
        for path, operations in doc["paths"].items():
            for method, operation in operations.items():
                if path in public:
                    seen_public.add(path)
                    assert "security" not in operation, (name, method, path)
                else:
                    assert operation["security"] == [{"bearer": []}], (name, method, path)
                    assert {"401", "403", "429"} <= set(operation["responses"]), (name, path)
        assert seen_public == public


def _params(doc: dict, path: str, method: str = "get") -> dict[str, dict]:
    return {p["name"]: p["schema"] for p in doc["paths"][path][method]["parameters"]}


def test_plate_jurisdiction_and_cursor_parameters_have_patterns(documents) -> None:
    reg = documents["registry"]
    for path in ("/v1/plates/{jurisdiction}/{plate}", "/v1/plates/{jurisdiction}/{plate}/events",
                 "/v1/plates/{jurisdiction}/{plate}/candidates"):
        params = _params(reg, path)
        assert params["jurisdiction"]["pattern"] == RAW_JURISDICTION_PATTERN
        assert params["plate"]["pattern"] == RAW_PLATE_PATTERN
    assert _params(reg, "/v1/hotlist")["since"]["anyOf"][0]["pattern"] == CURSOR_PATTERN
    audit = _params(reg, "/v1/audit")
    assert audit["cursor"]["anyOf"][0]["pattern"] == CURSOR_PATTERN
    assert audit["plate"]["pattern"] == RAW_PLATE_PATTERN  # optional: beside the anyOf
    assert audit["jurisdiction"]["pattern"] == RAW_JURISDICTION_PATTERN
    for path, method in (("/v1/plates/lookup", "post"),
                         ("/v1/owners/{owner_id}/preferences", "put")):
        assert {"400", "408", "413", "415", "422"} <= set(reg["paths"][path][method]["responses"])


def test_ingest_batch_limit_is_a_400_like_the_schemas_max_items(documents) -> None:
    operation = documents["ingest"]["paths"]["/v1/events"]["post"]
    batch = operation["requestBody"]["content"]["application/cloudevents-batch+json"]["schema"]
    assert batch["maxItems"] == MAX_BATCH and batch["minItems"] == 1
    assert str(MAX_BATCH) in operation["responses"]["400"]["description"]
    assert "events" not in operation["responses"]["413"]["description"]


def _accepts(normalize, text: str) -> bool:
    try:
        normalize(text)
    except InvalidPlate:
        return False
    return True


RAW = st.text(alphabet="aZ09 .-_/é\t", max_size=16) | st.from_regex(RAW_PLATE_PATTERN) | \
    st.from_regex(RAW_JURISDICTION_PATTERN)


@settings(max_examples=400, deadline=None)
@given(RAW)
def test_patterns_accept_exactly_what_the_plate_rules_accept(text: str) -> None:
    plate_ok = bool(re.fullmatch(RAW_PLATE_PATTERN, text)) and len(text) <= 64
    assert plate_ok == _accepts(normalize_plate, text), repr(text)
    jurisdiction_ok = bool(re.fullmatch(RAW_JURISDICTION_PATTERN, text)) and len(text) <= 64
    assert jurisdiction_ok == _accepts(normalize_jurisdiction, text), repr(text)


def test_request_bodies_and_links_document_plates(documents) -> None:
    ref = documents["registry"]["components"]["schemas"]["PlateRef"]["properties"]
    assert ref["plate"]["pattern"] == RAW_PLATE_PATTERN
    assert ref["jurisdiction"]["pattern"] == RAW_JURISDICTION_PATTERN
    links = documents["registry"]["paths"]["/v1/hotlist"]["get"]["responses"]["200"]["links"]
    assert links["NextPage"]["parameters"] == {"since": "$response.body#/next"}
