"""HTTP API bodies of the registry (contract section 5) and ``plates.status`` values (section 3).

Every model forbids unknown fields. In particular :class:`EnforcementView` has
no owner field and rejects one, so owner data cannot reach enforcement
clients by accident; only :class:`FullView` (``portal`` / ``operator``) has
``owner``. Serializing a ``FullView`` through a response model declared as
``EnforcementView`` drops the owner (pydantic serializes the declared type).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from schemas._types import OUTPUT, SAFE_ID_PATTERN, STRICT_INPUT, Rfc3339Datetime
from schemas.events import Language, PlateClass, SuspensionReason
from schemas.plates import Jurisdiction, Plate, plate_key

__all__ = [
    "Status",
    "Flag",
    "STATUS_PRECEDENCE",
    "VehicleView",
    "EnforcementView",
    "OwnerView",
    "FullView",
    "UnknownPlateResult",
    "HotlistEntry",
    "Hotlist",
    "PlateRef",
    "Purpose",
    "CaseRef",
    "PlateQuery",
    "CandidatesQuery",
    "HistoryQuery",
    "OwnerQuery",
    "AuditQuery",
    "LookupRequest",
    "LookupResponse",
    "MAX_LOOKUP_PLATES",
    "IngestAccepted",
]

Status = Literal["valid", "expired", "suspended", "cancelled", "stolen"]
Flag = Literal["stolen", "cancelled", "suspended", "expired"]
#: ``status`` is the first of these that is in ``flags``, else ``valid``.
STATUS_PRECEDENCE: tuple[Flag, ...] = ("stolen", "cancelled", "suspended", "expired")
MAX_LOOKUP_PLATES = 1000


class VehicleView(BaseModel):
    """Vehicle as shown to enforcement: no VIN."""

    model_config = OUTPUT

    make: str
    model: str
    year: int
    colour: str


class EnforcementView(BaseModel):
    """What enforcement sees of a plate; never owner data."""

    model_config = OUTPUT

    jurisdiction: Jurisdiction
    plate: Plate
    status: Status
    flags: list[Flag] = Field(
        description="Every one of stolen, cancelled, suspended, expired that holds"
    )
    expires_on: date | None
    plate_class: PlateClass
    suspension_reasons: list[SuspensionReason]
    vehicle: VehicleView | None
    smart_plate: bool = Field(description="A smart plate device is paired")
    as_of: Rfc3339Datetime = Field(
        description="When the view was derived: the registry data in it is current as of "
                    "this instant (read on a read replica: the replica's replay time, "
                    "behind the request's; for a query with `at`: that instant)")
    version: int = Field(ge=0, description="How many of the plate's accepted events are "
                         "folded into this view")

    @property
    def plate_key(self) -> str:
        return plate_key(self.jurisdiction, self.plate)


class OwnerView(BaseModel):
    model_config = OUTPUT

    owner_id: str
    name: str
    email: str | None = None
    phone: str | None = None
    language: Language = Language.EN


class FullView(EnforcementView):
    """The enforcement view plus the owner, for ``portal`` and ``operator`` keys."""

    owner: OwnerView | None


class UnknownPlateResult(BaseModel):
    """A batch lookup result for a plate with no ``plate.issued`` event."""

    model_config = OUTPUT

    jurisdiction: Jurisdiction
    plate: Plate
    status: Literal["unknown"] = "unknown"


class HotlistEntry(EnforcementView):
    """A hotlist change: the current view, ``removed`` when the plate left the flagged list."""

    removed: bool


class Hotlist(BaseModel):
    """``GET /v1/hotlist`` body; pass ``next`` as ``since`` to get the following changes."""

    model_config = OUTPUT

    entries: list[HotlistEntry]
    next: str = Field(description="Opaque cursor")


class PlateRef(BaseModel):
    """One plate of a lookup request; both parts are normalized."""

    model_config = STRICT_INPUT

    jurisdiction: Jurisdiction
    plate: Plate


class Purpose(StrEnum):
    """Why plate or owner data is read (contract section 5); kept in the audit log."""

    TRAFFIC_STOP = "traffic_stop"
    PARKING_ENFORCEMENT = "parking_enforcement"
    ALPR_HIT = "alpr_hit"
    INVESTIGATION = "investigation"
    COLLISION = "collision"
    REGISTRY_ADMINISTRATION = "registry_administration"
    AUDIT_REVIEW = "audit_review"
    TESTING = "testing"


CASE_REF_PATTERN = r"^[A-Za-z0-9._/-]{1,64}$"
#: The case or ticket a read belongs to: 1 to 64 of ``A-Z a-z 0-9 . _ / -``.
CaseRef = Annotated[str, StringConstraints(min_length=1, max_length=64,
                                           pattern=CASE_REF_PATTERN)]
_PURPOSE = Field(description="Why the data is read (audited)")
_CASE_REF = Field(default=None, description="The case or ticket (audited)")
_AT = Field(default=None, description="The view as it stood at this instant: the fold of the "
            "accepted events whose `time` is at or before it, flags for that day")


class _PlateRead(BaseModel):
    """What every read of one plate names: the plate, why, and the case."""

    model_config = STRICT_INPUT

    jurisdiction: Jurisdiction
    plate: Plate
    purpose: Purpose = _PURPOSE
    case_ref: CaseRef | None = _CASE_REF


class PlateQuery(_PlateRead):
    """``POST /v1/plates/query`` body: one plate's view (the plate travels in the body)."""

    at: Rfc3339Datetime | None = _AT


class CandidatesQuery(_PlateRead):
    """``POST /v1/plates/candidates`` body."""


class HistoryQuery(CandidatesQuery):
    """``POST /v1/plates/history`` body."""


class OwnerQuery(BaseModel):
    """``POST /v1/owners/query`` body (the owner id travels in the body)."""

    model_config = STRICT_INPUT

    owner_id: Annotated[str, StringConstraints(min_length=1, max_length=64,
                                               pattern=SAFE_ID_PATTERN)]
    purpose: Purpose = _PURPOSE
    case_ref: CaseRef | None = _CASE_REF


class AuditQuery(BaseModel):
    """``POST /v1/audit/query`` body: filters (AND), the reader's purpose, paging."""

    model_config = STRICT_INPUT

    jurisdiction: Jurisdiction | None = None
    plate: Plate | None = Field(default=None, description="Needs `jurisdiction`")
    key_id: Annotated[str, StringConstraints(max_length=64, pattern=r"^[a-z0-9]+$")] | None = None
    owner_id: Annotated[str, StringConstraints(min_length=1, max_length=64,
                                               pattern=SAFE_ID_PATTERN)] | None = None
    since: Rfc3339Datetime | None = None
    purpose: Purpose = _PURPOSE
    case_ref: CaseRef | None = _CASE_REF
    cursor: Annotated[str, StringConstraints(max_length=200, pattern=r"^[A-Za-z0-9_-]+$")] \
        | None = Field(default=None, description="`next` of the previous page")
    limit: int = Field(default=100, ge=1, le=1000)


class LookupRequest(BaseModel):
    """``POST /v1/plates/lookup`` body; any invalid plate makes the whole request invalid (422)."""

    model_config = STRICT_INPUT

    plates: list[PlateRef] = Field(min_length=1, max_length=MAX_LOOKUP_PLATES)
    purpose: Purpose = _PURPOSE
    case_ref: CaseRef | None = _CASE_REF
    at: Rfc3339Datetime | None = _AT


class LookupResponse(BaseModel):
    """``POST /v1/plates/lookup`` response: one result per requested plate, in request order.

    ``FullView`` for ``operator`` keys, ``EnforcementView`` for ``enforcement`` keys.
    """

    model_config = OUTPUT

    results: list[FullView | EnforcementView | UnknownPlateResult]


class IngestAccepted(BaseModel):
    """Ingest API ``202`` body."""

    model_config = OUTPUT

    accepted: int = Field(ge=0)
    ids: list[str]
