"""The OpenAPI documents say what the APIs do: key needed except on public routes, patterns
that accept exactly what the plate rules accept, documented errors."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.api import MAX_BATCH, create_ingest_app
from platereg.settings import load_settings
from registry.api.app import (
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
    return {"registry": create_registry_app(settings).openapi(),
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
    schemas = reg["components"]["schemas"]
    for name in ("PlateQuery", "CandidatesQuery", "HistoryQuery", "PlateRef"):
        props = schemas[name]["properties"]
        assert props["jurisdiction"]["pattern"] == RAW_JURISDICTION_PATTERN, name
        assert props["plate"]["pattern"] == RAW_PLATE_PATTERN, name
    assert _params(reg, "/v1/hotlist")["since"]["anyOf"][0]["pattern"] == CURSOR_PATTERN
    for path in ("/v1/plates/query", "/v1/plates/lookup", "/v1/plates/candidates",
                 "/v1/plates/history", "/v1/owners/query", "/v1/audit/query"):
        responses = reg["paths"][path]["post"]["responses"]
        assert {"400", "408", "413", "415", "422"} <= set(responses), path


def _walk(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, (*path, i))
    else:
        yield path, node


def test_no_plate_or_owner_id_in_any_url_the_document_describes(documents) -> None:
    """Contract section 5: plates and owner ids travel in bodies only. No path template
    takes a parameter; query parameters are only the hotlist's purpose, case ref, opaque
    cursor and limit (elsewhere a page size at most); no link fills a URL parameter with
    a plate, jurisdiction or owner."""
    reg = documents["registry"]
    for path, operations in reg["paths"].items():
        assert "{" not in path, path
        for method, operation in operations.items():
            names = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
            if (path, method) == ("/v1/hotlist", "get"):
                assert names == {("query", "purpose"), ("query", "case_ref"),
                                 ("query", "since"), ("query", "limit")}
            else:  # a page size at most (the owner's own routes): nothing personal
                assert names <= {("query", "limit")}, (path, method)
            for code, response in operation["responses"].items():
                for link in response.get("links", {}).values():
                    for value in link["parameters"].values():
                        assert not re.search(r"plate|jurisdiction|owner", value), (path, code)
    examples = [v for p, v in _walk(reg) if "example" in p or "examples" in p]
    assert "ABC123" in {v for v in examples if isinstance(v, str)}  # bodies do show plates
    for p, v in _walk(reg):
        if p and p[0] == "paths" and p[-1] in ("example",) and "parameters" in p:
            assert not isinstance(v, str) or "ABC" not in v, p


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
    assert links["NextPage"]["parameters"] == {"since": "$response.body#/next",
                                               "purpose": "$request.query.purpose"}
