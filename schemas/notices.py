"""Owner notices on ``plates.notices`` (contract section 4)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from schemas._types import OUTPUT, OwnerId, Rfc3339Datetime, Text128
from schemas.events import Language
from schemas.plates import Jurisdiction, Plate, plate_key

__all__ = ["NoticeKind", "Channel", "Notice"]


class NoticeKind(StrEnum):
    RENEWAL_REMINDER = "renewal_reminder"
    EXPIRED = "expired"
    RENEWED = "renewed"
    SUSPENDED = "suspended"
    REINSTATED = "reinstated"
    STOLEN_REPORTED = "stolen_reported"
    RECOVERED = "recovered"
    TRANSFERRED_IN = "transferred_in"
    TRANSFERRED_OUT = "transferred_out"
    CANCELLED = "cancelled"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    WEBHOOK = "webhook"
    PLATE_DISPLAY = "plate_display"
    PAPER = "paper"


class Notice(BaseModel):
    """One notice to one owner, keyed by plate key on ``plates.notices``.

    ``context`` holds what the kind needs, JSON values only: ``expires_on``
    (``YYYY-MM-DD``) and ``days_before`` for reminders, ``reason`` for
    suspensions/reinstatements/cancellations, and so on.
    """

    model_config = OUTPUT

    notice_id: Text128 = Field(
        description="Unique; deliveries use <notice_id>:<channel> as Idempotency-Key"
    )
    kind: NoticeKind
    jurisdiction: Jurisdiction
    plate: Plate
    owner_id: OwnerId
    language: Language
    channels: list[Channel]
    created_at: Rfc3339Datetime
    context: dict[str, Any] = Field(default_factory=dict)

    @property
    def plate_key(self) -> str:
        return plate_key(self.jurisdiction, self.plate)
