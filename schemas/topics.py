"""Kafka topic names, header names and content types of the contract."""

from __future__ import annotations

from typing import Final

EVENTS: Final = "plates.events"
DLQ: Final = "plates.events.dlq"
STATUS: Final = "plates.status"
NOTICES: Final = "plates.notices"
ALL_TOPICS: Final = (EVENTS, DLQ, STATUS, NOTICES)

# Headers of dead-lettered messages (values are UTF-8 text; partition and offset in decimal).
DLQ_REASON_HEADER: Final = "x-dlq-reason"
DLQ_DETAIL_HEADER: Final = "x-dlq-detail"
ORIGINAL_TOPIC_HEADER: Final = "x-original-topic"
ORIGINAL_PARTITION_HEADER: Final = "x-original-partition"
ORIGINAL_OFFSET_HEADER: Final = "x-original-offset"
DLQ_HEADERS: Final = (
    DLQ_REASON_HEADER,
    DLQ_DETAIL_HEADER,
    ORIGINAL_TOPIC_HEADER,
    ORIGINAL_PARTITION_HEADER,
    ORIGINAL_OFFSET_HEADER,
)

CONTENT_TYPE_HEADER: Final = "content-type"
CLOUDEVENTS_JSON: Final = "application/cloudevents+json"
CLOUDEVENTS_BATCH_JSON: Final = "application/cloudevents-batch+json"
