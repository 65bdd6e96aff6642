"""Topic names and dead-letter headers of the contract (sections 2 to 4)."""

EVENTS = "plates.events"
DLQ = "plates.events.dlq"
STATUS = "plates.status"
NOTICES = "plates.notices"

DLQ_REASON = "x-dlq-reason"
DLQ_DETAIL = "x-dlq-detail"
DLQ_ORIGINAL_TOPIC = "x-original-topic"
DLQ_ORIGINAL_PARTITION = "x-original-partition"
DLQ_ORIGINAL_OFFSET = "x-original-offset"
