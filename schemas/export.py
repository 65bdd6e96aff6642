"""Export the contract as JSON Schema files, an AsyncAPI 3.0.0 document and its HTML
event catalogue (``schemas.catalogue``).

    python -m schemas.export          # (re)write schemas/generated/
    python -m schemas.export --check  # exit 1 and name stale files if they differ

Output is deterministic: JSON with sorted keys and two-space indent, YAML built
in a fixed order from sorted JSON Schemas, no YAML anchors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter

from schemas import catalogue, signing, topics
from schemas.events import PlateEvent
from schemas.notices import Notice
from schemas.plates import PLATE_KEY_PATTERN
from schemas.validation import MAX_EVENT_BYTES, RejectReason
from schemas.views import (
    AuditQuery,
    CandidatesQuery,
    EnforcementView,
    FullView,
    HistoryQuery,
    Hotlist,
    HotlistEntry,
    IngestAccepted,
    LookupRequest,
    LookupResponse,
    OwnerQuery,
    OwnerView,
    PlateQuery,
    UnknownPlateResult,
)

__all__ = [
    "GENERATED_DIR",
    "SCHEMA_FILES",
    "json_schemas",
    "asyncapi",
    "export_all",
    "check",
    "write",
]

GENERATED_DIR = Path(__file__).resolve().parent / "generated"
SCHEMA_ID_PREFIX = "urn:plate-registry:schema:"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_FILE = "asyncapi.yaml"
CATALOGUE_FILE = "event-catalogue.html"
GENERATED_SUFFIXES = (".json", ".yaml", ".html")

# file stem -> (type, mode). Inputs use the validation schema, outputs the serialization one.
SCHEMA_FILES: dict[str, tuple[Any, str]] = {
    "plate-event": (PlateEvent, "validation"),
    "enforcement-view": (EnforcementView, "serialization"),
    "full-view": (FullView, "serialization"),
    "owner-view": (OwnerView, "serialization"),
    "unknown-plate-result": (UnknownPlateResult, "serialization"),
    "hotlist-entry": (HotlistEntry, "serialization"),
    "hotlist": (Hotlist, "serialization"),
    "lookup-request": (LookupRequest, "validation"),
    "plate-query": (PlateQuery, "validation"),
    "candidates-query": (CandidatesQuery, "validation"),
    "history-query": (HistoryQuery, "validation"),
    "owner-query": (OwnerQuery, "validation"),
    "audit-query": (AuditQuery, "validation"),
    "lookup-response": (LookupResponse, "serialization"),
    "ingest-accepted": (IngestAccepted, "serialization"),
    "notice": (Notice, "serialization"),
}


def _sorted(value: Any) -> Any:
    """Deep copy with sorted keys (also breaks object sharing, so YAML has no anchors)."""
    return json.loads(json.dumps(value, sort_keys=True))


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema (draft 2020-12) per file stem, each a self-contained resource with ``$id``."""
    out: dict[str, dict[str, Any]] = {}
    for stem, (tp, mode) in SCHEMA_FILES.items():
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            schema = tp.model_json_schema(mode=mode)  # type: ignore[arg-type]
        else:
            schema = TypeAdapter(tp).json_schema(mode=mode)  # type: ignore[arg-type]
            schema.setdefault("title", "PlateEvent")
        schema["$schema"] = JSON_SCHEMA_DIALECT
        schema["$id"] = SCHEMA_ID_PREFIX + stem
        out[stem] = _sorted(schema)
    out["plate-event"]["description"] = (
        f"A plate event: CloudEvents 1.0 structured JSON, at most {MAX_EVENT_BYTES} bytes. "
        "Unknown top-level attributes are extension attributes: names ^[a-z0-9]{1,20}$, "
        "scalar values."
    )
    return out


#: The JSON Schema files whose types are message payloads (a payload is a reference to the
#: schema's title in ``components/schemas``).
PAYLOAD_STEMS = ("plate-event", "enforcement-view", "notice")
_DEFS_REF = "#/$defs/"
COMPONENT_SCHEMA_REF = "#/components/schemas/"


def _component_refs(node: Any) -> Any:
    """``node`` with every ``#/$defs/X`` reference (``$ref`` values and discriminator
    mappings) pointing at ``#/components/schemas/X``, and each discriminator as the AsyncAPI
    Schema Object's form: the property name alone."""
    if isinstance(node, list):
        return [_component_refs(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith(_DEFS_REF):
            out[key] = COMPONENT_SCHEMA_REF + value.removeprefix(_DEFS_REF)
        elif key == "discriminator" and isinstance(value, dict):
            out[key] = value["propertyName"]
        else:
            out[key] = _component_refs(value)
    return out


def component_schemas(schemas: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The payload schemas and every schema they use, by name, for ``components/schemas``:
    the AsyncAPI default schema format (JSON Schema draft-07 and a string ``discriminator``)
    with references that resolve inside the AsyncAPI document."""
    out: dict[str, dict[str, Any]] = {}
    for stem in PAYLOAD_STEMS:
        schema = dict(schemas[stem])
        defs = schema.pop("$defs", {})
        for key in ("$schema", "$id"):
            schema.pop(key, None)
        for name, definition in {schema["title"]: schema, **defs}.items():
            definition = _component_refs(definition)
            if out.setdefault(name, definition) != definition:
                raise ValueError(f"two different schemas named {name}")
    return dict(sorted(out.items()))


def _payload(stem: str, schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"$ref": COMPONENT_SCHEMA_REF + schemas[stem]["title"]}


_KEY = {
    "type": "string",
    "description": "plate key JUR/PLATE",
    "pattern": PLATE_KEY_PATTERN,
    "examples": ["CA-ON/ABC123"],
}


def _kafka_binding(key: dict[str, Any]) -> dict[str, Any]:
    return {"kafka": {"bindingVersion": "0.5.0", "key": dict(key)}}


def _dlq_headers() -> dict[str, Any]:
    """The headers of a dead-lettered message."""
    text_header = {"type": "string"}
    dlq_headers = {
        "type": "object",
        "required": list(topics.DLQ_HEADERS),
        "properties": {
            topics.DLQ_REASON_HEADER: {**text_header, "enum": [r.value for r in RejectReason]},
            topics.DLQ_DETAIL_HEADER: {
                **text_header,
                "description": "Short human text; never contains plates or owner data",
            },
            topics.ORIGINAL_TOPIC_HEADER: {**text_header, "examples": [topics.EVENTS]},
            topics.ORIGINAL_PARTITION_HEADER: {
                **text_header,
                "pattern": "^[0-9]+$",
                "description": "Decimal partition number",
            },
            topics.ORIGINAL_OFFSET_HEADER: {
                **text_header,
                "pattern": "^[0-9]+$",
                "description": "Decimal offset",
            },
        },
    }
    return dlq_headers


_EVENT_MODES = (
    "CloudEvents 1.0 in either content mode of the Kafka protocol binding. Structured: the "
    "value is the whole event (this payload). Binary: the attributes in `ce_` headers "
    "(`ce_specversion`, `ce_id`, `ce_source`, `ce_type`, `ce_time`, `ce_subject`, "
    "extensions), `content-type: application/json`, the value the event's `data` only; a "
    "message with a `ce_` header is binary. Every message is signed by a registered "
    "producer: HMAC-SHA256 with the producer's secret over the signed bytes, which are the "
    "exact value bytes in structured mode, and in binary mode the `ce_` headers sorted by "
    "name, each as `name:value` and a line feed, then a line feed, then the value bytes.")


def _event_headers() -> dict[str, Any]:
    """The headers of a plate event (contract section 2, "Signed producers")."""
    return {
        "type": "object",
        "required": [signing.PRODUCER_HEADER, signing.SIGNATURE_HEADER],
        "properties": {
            topics.CONTENT_TYPE_HEADER: {
                "type": "string",
                "description": "Optional in structured mode (consumers do not require it); "
                               "binary mode: the data's media type, application/json",
                "examples": [topics.CLOUDEVENTS_JSON],
            },
            signing.PRODUCER_HEADER: {
                "type": "string", "pattern": signing.PRODUCER_NAME_PATTERN,
                "description": "The registered producer that signed the message "
                               "(`platereg sources producer add`)",
            },
            signing.SIGNATURE_HEADER: {
                "type": "string", "pattern": signing.SIGNATURE_PATTERN,
                "description": "v1= and the base64url (no padding) HMAC-SHA256 of the signed "
                               "bytes, keyed with the producer's secret as UTF-8 text",
            },
        },
        "patternProperties": {
            "^ce_[a-z0-9]{1,20}$": {
                "type": "string",
                "description": "Binary mode: one CloudEvents attribute (UTF-8 text)",
            },
        },
    }


def _messages(schemas: dict[str, Any]) -> dict[str, Any]:
    """The message of each topic."""
    dlq_headers = _dlq_headers()
    messages = {
        "PlateEvent": {
            "name": "PlateEvent",
            "title": "Plate event",
            "summary": "A fact about a plate, from a producer system.",
            "description": _EVENT_MODES,
            "contentType": topics.CLOUDEVENTS_JSON,
            "headers": _event_headers(),
            "payload": _payload("plate-event", schemas),
            "bindings": _kafka_binding(_KEY),
        },
        "DeadLetter": {
            "name": "DeadLetter",
            "title": "Rejected plate event",
            "summary": "The original message value, byte for byte, with the rejection in headers.",
            "contentType": "application/octet-stream",
            "headers": dlq_headers,
            "payload": {
                "type": "string",
                "format": "binary",
                "description": "The original bytes of the rejected message value (may be absent)",
            },
            "bindings": _kafka_binding(
                {
                    **_KEY,
                    "description": "The original message key (normally the plate key JUR/PLATE)",
                }
            ),
        },
        "PlateStatus": {
            "name": "PlateStatus",
            "title": "Plate status change",
            "summary": "The new enforcement view of a plate, after each change.",
            "contentType": "application/json",
            "payload": _payload("enforcement-view", schemas),
            "bindings": _kafka_binding(_KEY),
        },
        "Notice": {
            "name": "Notice",
            "title": "Owner notice",
            "summary": "A notice to one owner, to deliver on its channels.",
            "contentType": "application/json",
            "payload": _payload("notice", schemas),
            "bindings": _kafka_binding(_KEY),
        },
    }
    return messages


#: channel id -> (topic, message, description); then the operations on them.
_CHANNELS = {
    "platesEvents": (topics.EVENTS, "PlateEvent", "Plate events from producer systems."),
    "platesEventsDlq": (topics.DLQ, "DeadLetter", "Rejected plate events."),
    "platesStatus": (topics.STATUS, "PlateStatus", "Enforcement view changes."),
    "platesNotices": (topics.NOTICES, "Notice", "Notices to owners."),
}
_OPERATIONS = [
    ("ingestSendEvents", "send", "platesEvents", "Ingest API publishes validated events."),
    ("registryReceiveEvents", "receive", "platesEvents", "Registry folds plate events."),
    ("registrySendDeadLetters", "send", "platesEventsDlq", "Registry dead-letters rejects."),
    ("registrySendStatus", "send", "platesStatus", "Registry publishes view changes."),
    ("notificationsSendNotices", "send", "platesNotices", "Notifications publishes notices."),
    ("notificationsReceiveNotices", "receive", "platesNotices", "Dispatcher delivers notices."),
]


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document for the four topics."""
    schemas = json_schemas()
    messages = _messages(schemas)
    channels, operations = _CHANNELS, _OPERATIONS
    doc: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Plate Registry",
            "version": "1.0.0",
            "description": "Kafka topics of the plate registry. Every message is keyed by "
            "plate key JUR/PLATE.",
        },
        "defaultContentType": "application/json",
        "channels": {
            channel_id: {
                "address": address,
                "description": description,
                "messages": {message: {"$ref": f"#/components/messages/{message}"}},
            }
            for channel_id, (address, message, description) in channels.items()
        },
        "operations": {
            op_id: {
                "action": action,
                "summary": summary,
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "messages": [
                    {"$ref": f"#/channels/{channel_id}/messages/{channels[channel_id][1]}"}
                ],
            }
            for op_id, action, channel_id, summary in operations
        },
        "components": {"messages": messages, "schemas": component_schemas(schemas)},
    }
    plain: dict[str, Any] = json.loads(json.dumps(doc))
    return plain


def export_all() -> dict[str, str]:
    """Every generated file: path relative to ``schemas/generated`` -> text."""
    files = {
        f"{stem}.json": json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for stem, schema in json_schemas().items()
    }
    doc = asyncapi()
    files[ASYNCAPI_FILE] = yaml.safe_dump(
        doc, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )
    files[CATALOGUE_FILE] = catalogue.render(doc)
    return dict(sorted(files.items()))


def check(directory: Path | None = None) -> list[str]:
    """Names of generated files that are missing, differ, or should not be there."""
    directory = directory or GENERATED_DIR
    expected = export_all()
    stale = [
        name
        for name, content in expected.items()
        if not (directory / name).is_file() or (directory / name).read_text("utf-8") != content
    ]
    if directory.is_dir():
        stale += sorted(
            p.name
            for p in directory.iterdir()
            if p.suffix in GENERATED_SUFFIXES and p.name not in expected
        )
    return stale


def write(directory: Path | None = None) -> list[str]:
    """Write every generated file, remove obsolete ones; return the names that changed."""
    directory = directory or GENERATED_DIR
    changed = check(directory)
    directory.mkdir(parents=True, exist_ok=True)
    expected = export_all()
    for name, content in expected.items():
        (directory / name).write_text(content, "utf-8")
    for path in directory.iterdir():
        if path.suffix in GENERATED_SUFFIXES and path.name not in expected:
            path.unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schemas.export", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--check", action="store_true", help="only compare, exit 1 if stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = check()
        for name in stale:
            print(f"stale: schemas/generated/{name}", file=sys.stderr)
        if stale:
            print("run: python -m schemas.export", file=sys.stderr)
            return 1
        print("schemas/generated is up to date")
        return 0
    for name in write():
        print(f"wrote schemas/generated/{name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
