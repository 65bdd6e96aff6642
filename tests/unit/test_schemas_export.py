"""The checked-in generated contract files match the models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from schemas import export, topics


def test_generated_files_are_up_to_date() -> None:
    stale = export.check()
    assert stale == [], f"stale generated files {stale}: run `python -m schemas.export`"


def test_export_is_deterministic() -> None:
    assert export.export_all() == export.export_all()


def test_check_names_stale_and_extra_files(tmp_path: Path) -> None:
    assert set(export.check(tmp_path)) == set(export.export_all())
    export.write(tmp_path)
    assert export.check(tmp_path) == []
    (tmp_path / "notice.json").write_text("{}\n", "utf-8")
    (tmp_path / "old-model.json").write_text("{}\n", "utf-8")
    assert export.check(tmp_path) == ["notice.json", "old-model.json"]
    assert set(export.write(tmp_path)) == {"notice.json", "old-model.json"}
    assert not (tmp_path / "old-model.json").exists()
    assert export.check(tmp_path) == []


def test_cli_check_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(export, "GENERATED_DIR", tmp_path)
    assert export.main(["--check"]) == 1
    assert "stale: schemas/generated/plate-event.json" in capsys.readouterr().err
    assert export.main([]) == 0
    assert export.main(["--check"]) == 0


@pytest.mark.parametrize(
    "name",
    [
        "plate-event.json",
        "enforcement-view.json",
        "full-view.json",
        "hotlist.json",
        "notice.json",
        "lookup-request.json",
    ],
)
def test_json_schema_files(name: str) -> None:
    schema = json.loads(export.export_all()[name])
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(name.removesuffix(".json"))


def test_enforcement_view_schema_has_no_owner() -> None:
    files = export.export_all()
    enforcement = json.loads(files["enforcement-view.json"])
    assert "owner" not in enforcement["properties"]
    assert enforcement["additionalProperties"] is False
    assert "owner" in json.loads(files["full-view.json"])["properties"]


def test_plate_event_schema_covers_every_type() -> None:
    schema = json.loads(export.export_all()["plate-event.json"])
    assert len(schema["oneOf"]) == 11
    assert schema["discriminator"]["propertyName"] == "type"


def test_asyncapi_document() -> None:
    doc = yaml.safe_load(export.export_all()["asyncapi.yaml"])
    assert doc["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert addresses == {topics.EVENTS, topics.DLQ, topics.STATUS, topics.NOTICES}
    messages = doc["components"]["messages"]
    for message in messages.values():
        key = message["bindings"]["kafka"]["key"]
        assert key["type"] == "string"
    assert (
        messages["PlateEvent"]["bindings"]["kafka"]["key"]["description"] == "plate key JUR/PLATE"
    )
    assert set(messages["DeadLetter"]["headers"]["properties"]) == set(topics.DLQ_HEADERS)
    assert messages["DeadLetter"]["payload"]["format"] == "binary"
    actions = {(op["action"], op["channel"]["$ref"]) for op in doc["operations"].values()}
    assert ("receive", "#/channels/platesEvents") in actions
    assert ("send", "#/channels/platesEventsDlq") in actions
    assert ("send", "#/channels/platesStatus") in actions
    assert ("send", "#/channels/platesNotices") in actions
    text = export.export_all()["asyncapi.yaml"]
    assert "&id" not in text and "*id" not in text, "no YAML anchors"


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_asyncapi_refs_resolve() -> None:
    """Every reference, the payload schemas' own included, points into the document (the
    official parser's check: tests/unit/test_asyncapi_parser.py)."""
    doc = yaml.safe_load(export.export_all()["asyncapi.yaml"])
    refs = _refs(doc)
    assert any(r.startswith("#/components/schemas/") for r in refs)
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: object = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, ref
            node = node[part]
    schemas = doc["components"]["schemas"]
    assert doc["components"]["messages"]["PlateEvent"]["payload"] == {
        "$ref": "#/components/schemas/PlateEvent"}
    assert len(schemas["PlateEvent"]["oneOf"]) == 11
    assert schemas["PlateEvent"]["discriminator"] == "type"   # AsyncAPI's form: a name
    assert not any("$defs" in s or "$schema" in s or "$id" in s for s in schemas.values())


def test_embedded_json_schema_refs_resolve_within_their_resource() -> None:
    for name, text in export.export_all().items():
        if name.endswith(".json"):
            schema = json.loads(text)
            for ref in _refs(schema):
                assert ref.startswith("#/$defs/"), ref
                assert ref.removeprefix("#/$defs/") in schema["$defs"], (name, ref)
