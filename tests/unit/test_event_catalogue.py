"""The event catalogue (schemas/generated/event-catalogue.html) says what the models say:
every event type with each of its data fields, every topic, every message's headers, every
type a payload uses; its links resolve; it is kept up to date by the export check."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from schemas import catalogue, export, topics
from schemas.events import DATA_TYPES, EVENT_TYPES


class Sections(HTMLParser):
    """The text under each element with an id (until the next one), and every href."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.current = ""
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(found["id"])
            if tag in ("h2", "h3"):
                self.current = found["id"]
        if tag == "a" and found.get("href"):
            self.hrefs.append(found["href"])

    def handle_data(self, data: str) -> None:
        self.text[self.current] = self.text.get(self.current, "") + data + " "


@pytest.fixture(scope="module")
def page() -> str:
    return export.export_all()[export.CATALOGUE_FILE]


@pytest.fixture(scope="module")
def sections(page: str) -> Sections:
    parser = Sections()
    parser.feed(page)
    return parser


def test_every_event_type_with_every_data_field(sections: Sections) -> None:
    assert len(EVENT_TYPES) == 11
    for event_type, data_type in DATA_TYPES.items():
        text = sections.text[f"event-{event_type}"]
        assert text.startswith(str(event_type)), event_type
        for name in data_type.__annotations__:
            assert re.search(rf"\b{name}\b", text), (event_type, name)


def test_the_envelope_attributes_are_listed_once(sections: Sections) -> None:
    text = sections.text["events-title"]
    for name in ("specversion", "id", "source", "type", "time", "subject", "datacontenttype"):
        assert re.search(rf"\b{name}\b", text), name


def test_every_topic_and_message_with_its_headers(sections: Sections) -> None:
    text = sections.text["topics-title"]
    for address in (topics.EVENTS, topics.DLQ, topics.STATUS, topics.NOTICES):
        assert address in text
    dead_letter = sections.text["message-DeadLetter"]
    for header in topics.DLQ_HEADERS:
        assert header in dead_letter, header
    assert topics.CONTENT_TYPE_HEADER in sections.text["message-PlateEvent"]
    for name in ("PlateEvent", "DeadLetter", "PlateStatus", "Notice"):
        assert "Key" in sections.text[f"message-{name}"], name


def test_every_type_a_payload_uses_has_a_section(sections: Sections, page: str) -> None:
    doc = export.asyncapi()
    for name, schema in doc["components"]["schemas"].items():
        if "properties" in schema and not name.startswith("Plate") or "enum" in schema:
            assert f"type-{name}" in sections.ids, name
    assert "passenger" in sections.text["type-PlateClass"]
    assert "owner_id" in sections.text["type-Owner"]


def test_internal_links_resolve(sections: Sections) -> None:
    internal = {h[1:] for h in sections.hrefs if h.startswith("#")}
    assert internal and internal <= sections.ids
    assert "asyncapi.yaml" in sections.hrefs   # beside it, on disk and at /docs/


def test_text_is_escaped() -> None:
    doc = export.asyncapi()
    doc["components"]["schemas"]["Owner"]["description"] = "<script>alert(1)</script>"
    page = catalogue.render(doc)
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_the_export_check_covers_the_catalogue(tmp_path: Path) -> None:
    export.write(tmp_path)
    assert export.check(tmp_path) == []
    path = tmp_path / export.CATALOGUE_FILE
    path.write_text(path.read_text().replace("plate.issued", "plate.invented"), "utf-8")
    assert export.check(tmp_path) == [export.CATALOGUE_FILE]
    (tmp_path / "old.html").write_text("", "utf-8")
    assert export.check(tmp_path) == [export.CATALOGUE_FILE, "old.html"]


def test_type_text() -> None:
    assert catalogue.type_text({"anyOf": [{"$ref": "#/components/schemas/X"},
                                          {"type": "null"}]}) == ("X or null", "X")
    assert catalogue.type_text({"type": "array", "items": {"type": "string"}}) == (
        "array of string", None)
    assert catalogue.type_text({"type": "string", "format": "date"}) == ("string (date)", None)
