"""The ingest API: ``POST /v1/events`` for producers that cannot speak Kafka (contract 5).

Request
    * one event: ``application/cloudevents+json`` or ``application/json`` with a
      JSON object (structured mode), or the CloudEvents HTTP binding's binary mode:
      the attributes in ``ce-`` headers (percent-encoded), the body the ``data``,
      ``Content-Type: application/json`` or none (``schemas.content_modes``); both
      modes are the same event;
    * a batch: ``application/cloudevents-batch+json`` or ``application/json``
      with a JSON array of 1 to :data:`MAX_BATCH` events.
    A ``charset`` parameter, when present, must be ``utf-8``.

Answers (errors are ``application/problem+json``)
    * 202 ``{"accepted": n, "ids": [...]}`` only after the broker acknowledged
      every event (``acks=all``), ids in request order.
    * 400 the body is not JSON (or nests deeper than 64 levels, or repeats an
      object key), is a top-level scalar, is an empty batch or one of more than
      :data:`MAX_BATCH` events (the schema's ``minItems``/``maxItems``), or its
      shape does not match the content type.
    * 413 the body is over ``PLATEREG_MAX_BODY_BYTES`` (middleware).
    * 415 missing or unsupported ``Content-Type`` (or a charset other than UTF-8).
    * 422 one or more events are invalid: ``errors`` lists ``{index, reason,
      detail}`` for each (reasons are the contract's DLQ reasons, plus
      ``id_conflict`` for a (source, id) used twice in the batch with
      different content, and ``unauthorized_source`` for an event whose
      ``source`` is outside the API key's source prefixes or whose type or
      reason the source policy does not allow there). Nothing of the batch is
      published.
    * 503 with ``Retry-After``: the broker did not acknowledge within
      ``PLATEREG_KAFKA_TIMEOUT_SECONDS``. Part of the batch may have been
      stored; retry the whole batch. The duplicates are harmless because the
      registry deduplicates by event ``id``.

Published records: key = normalized plate key, value = the normalized
CloudEvents JSON (``subject`` normalized, ``null`` attributes omitted) with the
``authcontext`` extension attributes ``authtype: api_key`` and ``authid: <key
id>`` stamped on it, header ``content-type: application/cloudevents+json``, signed
as the ingest API's own registered producer (``PLATEREG_PRODUCER_NAME``, after the
key's source prefixes were checked; ``ingest.publisher``).

``platereg_ingest_events_total{outcome}`` counts ``accepted`` events (in 202
answers), ``rejected`` events (the invalid events of 422 answers) and
``refused`` events (the valid events of 503 answers). Nothing
here logs event content: only counts and reasons.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from ingest.publisher import BrokerUnavailable, Publisher, published
from platereg.db import create_pool, ping
from platereg.http import (
    PROBLEM_RESPONSES,
    ProblemError,
    add_probes,
    content_type,
    create_app,
    decode_body,
)
from platereg.http_server import settle_heap
from platereg.kafka import broker_reachable
from platereg.logging import get_logger
from platereg.metrics import INGEST_API, INGEST_EVENTS
from platereg.security.auth import Authenticator, Principal, require
from platereg.security.policy_store import TimedPolicyCache
from platereg.settings import Settings, load_settings
from schemas.content_modes import has_http_attributes, http_binary_event
from schemas.events import Event
from schemas.policy import Policy, prefix_allows, reason_of
from schemas.topics import CLOUDEVENTS_BATCH_JSON, CLOUDEVENTS_JSON
from schemas.validation import Rejection, RejectReason, parse_event_objs
from schemas.views import IngestAccepted

log = get_logger("ingest.api")

MAX_BATCH = 1000
JSON = "application/json"
SINGLE, BATCH, EITHER = "single", "batch", "either"
MEDIA_TYPES = {CLOUDEVENTS_JSON: SINGLE, CLOUDEVENTS_BATCH_JSON: BATCH, JSON: EITHER}


def _problem_doc(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": {"type": "object"}}}}


_EVENT_EXAMPLE = {
    "specversion": "1.0", "id": "2b7c1d5e-0d1f-4a53-9c55-6f1e0a3b9f10",
    "source": "/registry/office/0042", "type": "plate.renewed",
    "time": "2026-11-24T15:04:05Z", "subject": "CA-ON/ABC123",
    "datacontenttype": "application/json", "data": {"expires_on": "2027-11-30"},
}
_EVENT_SCHEMA = {"type": "object", "description": "A plate event (CloudEvents 1.0, "
                 "structured JSON); see plate-event.json / the AsyncAPI document"}
_BATCH_SCHEMA = {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": _EVENT_SCHEMA}
REQUEST_BODY = {
    "required": True,
    "content": {
        CLOUDEVENTS_JSON: {"schema": _EVENT_SCHEMA, "example": _EVENT_EXAMPLE},
        CLOUDEVENTS_BATCH_JSON: {"schema": _BATCH_SCHEMA, "example": [_EVENT_EXAMPLE]},
        JSON: {"schema": {"oneOf": [_EVENT_SCHEMA, _BATCH_SCHEMA]}, "example": _EVENT_EXAMPLE},
    },
}


def media_type(header: str | None) -> str:
    """The supported media type of a Content-Type header, or a 415 problem."""
    return content_type(header, MEDIA_TYPES)


def events_of(raw: bytes, kind: str) -> list[Any]:
    """The list of event objects in a body, or a 400 problem."""
    body = decode_body(raw)
    expected = MEDIA_TYPES[kind]
    if isinstance(body, dict):
        if expected == BATCH:
            raise ProblemError(400, "Bad Request",
                               f"{CLOUDEVENTS_BATCH_JSON} must be a JSON array of events")
        return [body]
    if isinstance(body, list):
        if expected == SINGLE:
            raise ProblemError(400, "Bad Request",
                               f"{CLOUDEVENTS_JSON} must be one event (a JSON object); "
                               f"send batches as {CLOUDEVENTS_BATCH_JSON}")
        if not body:
            raise ProblemError(400, "Bad Request", "the batch is empty")
        if len(body) > MAX_BATCH:  # the schema's maxItems, like the empty batch's minItems
            raise ProblemError(400, "Bad Request",
                               f"a batch holds at most {MAX_BATCH} events; split it")
        return body
    raise ProblemError(400, "Bad Request",
                       "the body must be a JSON object (one event) or an array (a batch)")


def is_binary_mode(headers: list[tuple[bytes, bytes]], content_type_header: str | None) -> bool:
    """A request in the HTTP binding's binary mode: ``ce-`` headers, and no structured or
    batch content type (with one of those, the body is the event and ``ce-`` headers are
    ignored, as the binding says)."""
    if not has_http_attributes(headers):
        return False
    kind = (content_type_header or "").split(";", 1)[0].strip().lower()
    return kind not in (CLOUDEVENTS_JSON, CLOUDEVENTS_BATCH_JSON)


def binary_event(headers: list[tuple[bytes, bytes]], content_type_header: str | None,
                 raw: bytes) -> Any:
    """The one event of a binary-mode request as a structured event object: 415 for a
    body that is not ``application/json``, 400 for one that is not JSON, 422 for
    attributes that cannot be read (a repeated header, text that is not UTF-8)."""
    kind = None
    if content_type_header:
        content_type(content_type_header, (JSON,))
        kind = content_type_header.strip()
    try:
        return http_binary_event(headers, kind, raw)
    except Rejection as exc:
        if exc.reason == RejectReason.MALFORMED_JSON:
            raise ProblemError(400, "Bad Request", "the body (the event's data) is not "
                               f"acceptable JSON: {exc.detail}", reason=exc.reason.value
                               ) from None
        INGEST_EVENTS.labels("rejected").inc()
        raise ProblemError(422, "Unprocessable Content",
                           "1 of 1 event(s) are invalid; nothing was published",
                           errors=[{"index": 0, "reason": exc.reason.value,
                                    "detail": exc.detail}]) from None


def authorization_problem(event: dict[str, Any], sources: Sequence[str] | None,
                          policy: Policy | None) -> str | None:
    """Why the key may not publish ``event`` (a normalized event object), as an
    ``unauthorized_source`` detail; or None."""
    source = event["source"]
    if sources is not None and not prefix_allows(sources, source):
        return "source: outside the source prefixes of this API key"
    if policy is not None:
        reason = reason_of(event["type"], event.get("data"))
        if not policy.allows(source, event["type"], reason):
            return policy.explain(source, event["type"], reason)
    return None


def validate_batch(items: list[Any], now: datetime, *, sources: Sequence[str] | None = None,
                   policy: Policy | None = None, depth_known: bool = False,
                   ) -> tuple[list[dict[str, Any]], list[dict]]:
    """Validate every item; returns (normalized events, errors listing invalid indexes).

    The events are checked by the one event validator
    (:func:`schemas.validation.parse_event_objs`, one schema call for the batch). With
    ``sources`` (the key's source prefixes) and ``policy``, an event outside them is an
    ``unauthorized_source`` error. ``depth_known``: the items come from the strict body
    decoder, which already holds them to the nesting limit.
    """
    events: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], tuple[int, Event]] = {}
    for index, result in enumerate(parse_event_objs(items, now=now, depth_known=depth_known)):
        if isinstance(result, Rejection):
            errors.append({"index": index, "reason": result.reason.value,
                           "detail": result.detail})
            continue
        event = result.obj
        problem = authorization_problem(event, sources, policy)
        if problem is not None:
            errors.append({"index": index, "reason": "unauthorized_source", "detail": problem})
            continue
        identity = (event["source"], event["id"])
        first = seen.get(identity)
        if first is None:
            seen[identity] = (index, result)
        elif first[1].fingerprint() != result.fingerprint():
            errors.append({"index": index, "reason": "id_conflict",
                           "detail": f"id: also used by event [{first[0]}] of this batch "
                                     "(same source) with different content"})
            continue
        events.append(event)
    return events, errors


def _lifespan(settings: Settings) -> Any:
    """The app's resources: database pool, key authenticator, publisher, policy cache."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings.dsn(), min_size=1, max_size=settings.db_pool_max)
        app.state.pool = pool
        app.state.authenticator = Authenticator(pool, settings.rate_limit_per_second,
                                                settings.rate_limit_burst)
        publisher = Publisher(settings)
        app.state.publisher = publisher
        app.state.policies = TimedPolicyCache(pool)
        if not await publisher.start():
            log.warning("event broker not reachable at start-up; will retry on each request")
        settle_heap()
        try:
            yield
        finally:
            await publisher.stop()
            await pool.close()

    return lifespan


#: The documented answers of POST /v1/events besides 202.
EVENTS_RESPONSES: dict[int | str, dict[str, Any]] = {
    **PROBLEM_RESPONSES,
    400: _problem_doc("Not JSON, wrong shape for the content type, or a batch of "
                      f"none or more than {MAX_BATCH} events"),
    408: _problem_doc("The body did not arrive within "
                      "PLATEREG_HTTP_BODY_TIMEOUT_SECONDS"),
    413: _problem_doc("Body over PLATEREG_MAX_BODY_BYTES"),
    415: _problem_doc("Unsupported Content-Type"),
    422: _problem_doc("Invalid or unauthorized events: `errors` = [{index, reason, "
                      "detail}] (reason `unauthorized_source`: the event's source is "
                      "outside the key's source prefixes or the source policy); "
                      "nothing was published"),
    503: _problem_doc("The broker did not acknowledge in time, or too many requests "
                      "are in progress; see Retry-After and retry the whole request"),
}


def create_ingest_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    lifespan = _lifespan(settings)
    app = create_app(
        title="Plate Registry ingest API",
        description="Accepts plate events (CloudEvents 1.0 JSON) from producers that cannot "
                    "use Kafka and publishes them to `plates.events`. All or nothing per "
                    "request; 202 only after the broker acknowledged every event.",
        settings=settings, lifespan=lifespan, service="ingest",
    )

    async def db_ready() -> bool:
        return await ping(app.state.pool)

    async def kafka_ready() -> bool:
        return await broker_reachable(settings, timeout=min(3.0, settings.kafka_timeout_seconds))

    add_probes(app, {"postgres": db_ready, "kafka": kafka_ready}, metrics=INGEST_API)

    @app.post(
        "/v1/events", status_code=202, tags=["ingest"],
        summary="Publish one event or a batch (all or nothing)",
        description="Structured mode: the body is the event (or a batch of events). "
                    "Binary mode (the CloudEvents HTTP binding's), for one event: the "
                    "attributes in `ce-` headers (`ce-specversion`, `ce-id`, `ce-source`, "
                    "`ce-type`, `ce-time`, `ce-subject`, extensions; values "
                    "percent-encoded), the body the event's `data` as JSON "
                    "(`Content-Type: application/json` or none). Both modes are the "
                    "same event.",
        response_model=IngestAccepted,
        responses=EVENTS_RESPONSES,
        openapi_extra={"requestBody": REQUEST_BODY},
    )
    async def post_events(request: Request,
                          principal: Principal = Depends(require("ingest"))) -> Response:
        header = request.headers.get("content-type")
        binary = is_binary_mode(request.scope["headers"], header)
        if binary:
            items = [binary_event(request.scope["headers"], header, await request.body())]
        else:
            items = events_of(await request.body(), media_type(header))
        policy = await request.app.state.policies.current()
        events, errors = validate_batch(items, datetime.now(UTC), sources=principal.sources,
                                        policy=policy, depth_known=not binary)
        if errors:
            INGEST_EVENTS.labels("rejected").inc(len(errors))
            log.info("events rejected", invalid=len(errors), batch=len(items),
                     reasons=sorted({e["reason"] for e in errors}))
            raise ProblemError(
                422, "Unprocessable Content",
                f"{len(errors)} of {len(items)} event(s) are invalid; nothing was published",
                errors=errors,
            )
        publisher: Publisher = request.app.state.publisher
        try:
            await publisher.publish([published(e, principal.key_id) for e in events])
        except BrokerUnavailable as exc:
            INGEST_EVENTS.labels("refused").inc(len(events))
            raise ProblemError(503, "Service Unavailable",
                               f"{exc.detail}; retry the whole request (duplicates are "
                               "deduplicated by event id)",
                               headers={"Retry-After": str(exc.retry_after)}) from None
        INGEST_EVENTS.labels("accepted").inc(len(events))
        body = {"accepted": len(events), "ids": [e["id"] for e in events]}
        return Response(orjson.dumps(body), status_code=202, media_type=JSON)

    return app
