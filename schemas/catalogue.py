"""The event catalogue: one static HTML page made from the AsyncAPI document.

For readers of the Kafka topics who do not run AsyncAPI tools: every topic (address,
message, who sends and who receives, the key), every plate event type with its ``data``
fields, the CloudEvents attributes every event carries, each message's headers and
payload, and every type the payloads use (objects with their fields, enums with their
values). Pure: :func:`render` takes the document (:func:`schemas.export.asyncapi`) and
returns the page; ``python -m schemas.export`` writes it beside ``asyncapi.yaml`` and
``--check`` compares it, and the registry API serves it at ``/docs/events``.

Jinja2 (autoescaped) renders it; no script; its one ``<style>`` element is allowed by
hash in the registry API's Content-Security-Policy. Why not the AsyncAPI project's HTML
template: it needs Node.js at export time and builds a page that runs a script bundle,
where a plain table per event is what a reader needs.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

__all__ = ["render", "event_types", "fields", "type_text"]

REF_PREFIX = "#/components/schemas/"
#: The CloudEvents attributes of the envelope, listed once for all event types.
ENVELOPE_ORDER = ("specversion", "id", "source", "type", "time", "subject", "datacontenttype")

_env = Environment(loader=PackageLoader("schemas", "templates"),
                   autoescape=select_autoescape(default=True, default_for_string=True),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                   keep_trailing_newline=True)


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.removeprefix(REF_PREFIX) if isinstance(ref, str) else None


def type_text(schema: dict[str, Any]) -> tuple[str, str | None]:
    """A field's type in words and the name of the type it links to (or None)."""
    if name := _ref_name(schema):
        return name, name
    if "anyOf" in schema:
        parts = [type_text(s) for s in schema["anyOf"]]
        link = next((lk for _, lk in parts if lk), None)
        return " or ".join(text for text, _ in parts), link
    if "const" in schema:
        return f'"{schema["const"]}"', None
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"]), None
    kind = schema.get("type", "any")
    if kind == "array":
        text, link = type_text(schema.get("items", {}))
        return f"array of {text}", link
    if "format" in schema:
        return f"{kind} ({schema['format']})", None
    return str(kind), None


def _rules(schema: dict[str, Any]) -> list[str]:
    """Constraints worth a reader's eye (of the schema and of its non-null alternatives)."""
    out: list[str] = []
    for part in [schema, *[s for s in schema.get("anyOf", []) if s.get("type") != "null"]]:
        if "minLength" in part or "maxLength" in part:
            out.append(f"length {part.get('minLength', 0)} to {part.get('maxLength', 'any')}")
        if "minimum" in part or "maximum" in part:
            out.append(f"from {part.get('minimum', 'any')} to {part.get('maximum', 'any')}")
        if "minItems" in part or "maxItems" in part:
            out.append(f"{part.get('minItems', 0)} to {part.get('maxItems', 'any')} items")
        if "pattern" in part and len(part["pattern"]) <= 60:
            out.append(f"pattern {part['pattern']}")
        if part.get("examples"):
            out.append("e.g. " + ", ".join(str(e) for e in part["examples"]))
    if "default" in schema and schema["default"] is not None:
        out.append(f"default {schema['default']}")
    return out


def _description(schema: dict[str, Any]) -> str:
    texts = [schema.get("description")] + [s.get("description") for s in schema.get("anyOf", [])]
    return " ".join(t for t in texts if t)


def fields(schema: dict[str, Any], skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """One row per property of an object schema: name, type, link, required, text, rules."""
    required = set(schema.get("required", ()))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        if name in skip:
            continue
        text, link = type_text(prop)
        rows.append({"name": name, "type": text, "link": link, "required": name in required,
                     "description": _description(prop), "rules": _rules(prop)})
    return rows


def event_types(doc: dict[str, Any], payload: str = "PlateEvent") -> list[dict[str, Any]]:
    """Each event type of the ``payload`` union: its ``type`` value, title, description and
    the fields of its ``data``."""
    schemas = doc["components"]["schemas"]
    out = []
    for option in schemas[payload]["oneOf"]:
        name = _ref_name(option)
        assert name is not None, option
        event = schemas[name]
        data = schemas.get(_ref_name(event["properties"]["data"]) or "", {})
        out.append({"type": event["properties"]["type"]["const"], "name": name,
                    "description": event.get("description", ""),
                    "data": fields(data), "data_name": _ref_name(event["properties"]["data"])})
    return out


def _envelope(doc: dict[str, Any], payload: str = "PlateEvent") -> list[dict[str, Any]]:
    schemas = doc["components"]["schemas"]
    first = schemas[_ref_name(schemas[payload]["oneOf"][0]) or ""]
    rows = {row["name"]: row for row in fields(first, skip=("data",))}
    rows["type"] = {**rows["type"], "type": "string", "rules": [],
                    "description": "The event type: one of those below"}
    return [rows[name] for name in ENVELOPE_ORDER if name in rows]


def _topics(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for channel_id, channel in doc["channels"].items():
        (message_ref,) = channel["messages"].values()
        message = message_ref["$ref"].rsplit("/", 1)[-1]
        ops = [(op["action"], op["summary"]) for op in doc["operations"].values()
               if op["channel"]["$ref"] == f"#/channels/{channel_id}"]
        out.append({"address": channel["address"], "description": channel["description"],
                    "message": message, "operations": ops})
    return out


def _messages(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, message in doc["components"]["messages"].items():
        key = message["bindings"]["kafka"]["key"]
        payload = message["payload"]
        payload_text, payload_link = type_text(payload)
        out.append({
            "name": name, "title": message["title"], "summary": message["summary"],
            "content_type": message.get("contentType", doc["defaultContentType"]),
            "headers": fields(message.get("headers", {})),
            "key": {"description": key.get("description", ""), "rules": _rules(key)},
            "payload": payload_text, "payload_link": payload_link,
            "payload_description": payload.get("description", ""),
            "topics": [t["address"] for t in _topics(doc) if t["message"] == name]})
    return out


def _types(doc: dict[str, Any], skip: set[str]) -> list[dict[str, Any]]:
    out = []
    for name, schema in doc["components"]["schemas"].items():
        if name in skip:
            continue
        out.append({"name": name, "description": schema.get("description", ""),
                    "enum": schema.get("enum"), "fields": fields(schema)})
    return out


def render(doc: dict[str, Any]) -> str:
    """The catalogue page of the AsyncAPI document ``doc``."""
    events = event_types(doc)
    shown = {"PlateEvent"} | {e["name"] for e in events} | {e["data_name"] for e in events}
    return _env.get_template("event-catalogue.html.j2").render(
        info=doc["info"], asyncapi=doc["asyncapi"], topics=_topics(doc),
        envelope=_envelope(doc), events=events, messages=_messages(doc),
        types=_types(doc, shown))
