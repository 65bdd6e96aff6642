"""Registry API bodies that ``schemas.views`` does not define (yet).

They build on the contract models (``EnforcementView``, ``FullView``,
``Notice``) so the field rules stay in one place. Candidates for moving into
``schemas/`` (owned by the schemas engineer).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from schemas._types import OUTPUT, STRICT_INPUT
from schemas.events import Language
from schemas.notices import Channel, Notice
from schemas.plates import Jurisdiction, Plate
from schemas.views import EnforcementView, FullView


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, str]] | None = Field(
        default=None, description="For 422: the field and rule of each error (never the input)")


class CandidatesResponse(BaseModel):
    """Existing plates that differ from the queried one only by ALPR-confusable characters."""

    model_config = OUTPUT

    jurisdiction: Jurisdiction
    plate: Plate
    candidates: list[FullView | EnforcementView] = Field(
        description="Nearest first: the plate itself (if it exists), then by number of "
        "substitutions")
    variants_checked: int = Field(ge=1, description="How many spellings were looked up")
    truncated: bool = Field(description="The variant set was larger than the bound and was cut")


class StoredEvent(BaseModel):
    model_config = OUTPUT

    id: str
    type: str
    source: str
    time: datetime
    data: dict[str, Any]
    received_at: datetime
    producer: str | None = Field(
        description="The signed producer that sent the event (its signature was checked)")
    authtype: str | None = Field(
        description="CloudEvents authcontext the producer stamped: `api_key` from the "
                    "ingest API")
    authid: str | None = Field(
        description="CloudEvents authcontext: the principal, for the ingest API the key id")


class PlateEvents(BaseModel):
    """A plate's accepted events in fold order (``time``, then ``id``)."""

    model_config = OUTPUT

    jurisdiction: Jurisdiction
    plate: Plate
    events: list[StoredEvent]
    truncated: bool


class Delivery(BaseModel):
    model_config = OUTPUT

    channel: str
    attempt: int
    outcome: Literal["sent", "retry", "failed"]
    status_code: int | None
    error: str | None
    at: datetime


class NoticeWithDeliveries(Notice):
    deliveries: list[Delivery]


class OwnerPlates(BaseModel):
    model_config = OUTPUT

    owner_id: str
    plates: list[FullView]


class OwnerNotices(BaseModel):
    model_config = OUTPUT

    owner_id: str
    notices: list[NoticeWithDeliveries]


def _unique(channels: list[Channel]) -> list[Channel]:
    if len(set(channels)) != len(channels):
        raise ValueError("channels must not repeat")
    return channels


class PreferencesUpdate(BaseModel):
    """An owner's notice preferences (the owner page sets them). The body ``GET
    /v1/me/preferences`` returns is accepted as it is: ``owner_id`` (which must be the
    token's owner) and ``updated_at`` are read-only and ignored."""

    model_config = STRICT_INPUT

    channels: Annotated[list[Channel], AfterValidator(_unique)] | None = Field(
        min_length=1, max_length=len(Channel),
        description="Channels to use, each at most once; null: the default (e-mail when "
                    "there is an address, else SMS, else paper)")
    language: Language | None = Field(
        default=None, description="Notice language; absent or null: the owner's language")
    owner_id: str | None = Field(
        default=None, max_length=64,
        description="Read-only (as GET returns it); another owner's id is a 422")
    updated_at: datetime | None = Field(default=None, description="Read-only, ignored")


class OwnerPreferences(BaseModel):
    model_config = OUTPUT

    owner_id: str
    channels: list[Channel] | None = Field(
        description="null: the default (email when there is an address, else SMS)")
    language: Language | None = Field(description="null: the owner's language")
    updated_at: datetime | None


class OwnerRecord(BaseModel):
    """``POST /v1/owners/query``: an owner's plates (with owner data), notices (newest first,
    with every delivery attempt) and preferences."""

    model_config = OUTPUT

    owner_id: str
    plates: list[FullView]
    notices: list[NoticeWithDeliveries]
    preferences: OwnerPreferences


class AuditEntry(BaseModel):
    model_config = OUTPUT

    id: int
    at: datetime
    key_id: str
    kind: str = Field(description="single, batch, candidates, hotlist, history, owner, "
                                  "owner_notices, owner_preferences or audit")
    jurisdiction: str | None = Field(description="null for a read that names no plate")
    plate: str | None
    owner_id: str | None = Field(description="The owner whose record was read")
    purpose: str | None
    case_ref: str | None
    as_at: datetime | None = Field(description="The `at` of the query (a past view)")
    result: str = Field(description="The status answered, not_found, found, empty, listed "
                        "or a notice kind")


class AuditPage(BaseModel):
    model_config = OUTPUT

    entries: list[AuditEntry]
    next: str | None = Field(description="Pass as `cursor` for the next page; null at the end")

