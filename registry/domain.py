"""The registry's status rules and views of a plate state, as pure functions.

The state and its fold are shared with the notices and live in
``schemas.fold``; here are the flags and status of a state on a given day
(contract section 2's precedence) and the views the APIs and
``plates.status`` publish (contract section 5): the enforcement view never
carries owner data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from schemas.fold import HistoryEvent, PlateState, fold_until, today_in

STATUS_ORDER = ("stolen", "cancelled", "suspended", "expired")


# --- status ------------------------------------------------------------------

def flags_of(state: PlateState, today: dt.date) -> list[str]:
    """Every flag that holds, in the contract's precedence order (``STATUS_ORDER``)."""
    return flags_from(state.stolen, state.cancelled, state.suspension_reasons,
                      state.expires_on, today)


def flags_from(stolen: bool, cancelled: bool, suspension_reasons: Any,
               expires_on: dt.date | None, today: dt.date) -> list[str]:
    """:func:`flags_of` from the state's parts (the one place for the flag rules)."""
    flags = []
    if stolen:
        flags.append("stolen")
    if cancelled:
        flags.append("cancelled")
    if suspension_reasons:
        flags.append("suspended")
    if expires_on is not None and today > expires_on:
        flags.append("expired")
    return flags


def status_of(flags: list[str]) -> str:
    return flags[0] if flags else "valid"


def enforcement_view(state: PlateState, *, today: dt.date, as_of: dt.datetime) -> dict[str, Any]:
    """The enforcement view (contract section 5): never any owner data."""
    return view_from(state.jurisdiction, state.plate, state.plate_class, state.expires_on,
                     state.vehicle, state.device_id is not None, state.suspension_reasons,
                     state.stolen, state.cancelled, state.event_count, today, as_of)


#: What :func:`view_from` takes, in order: ``PlateState`` fields, except ``smart_plate``
#: (whether ``device_id`` is set) and ``version`` (``event_count``). Readers that select
#: these (``registry.api.lookups``) build views without a ``PlateState`` per row.
VIEW_PARTS = ("jurisdiction", "plate", "plate_class", "expires_on", "vehicle", "smart_plate",
              "suspension_reasons", "stolen", "cancelled", "version")
VEHICLE_FIELDS = ("make", "model", "year", "colour")


def view_from(jurisdiction: str, plate: str, plate_class: str | None,
              expires_on: dt.date | None, vehicle: Mapping[str, Any] | None,
              smart_plate: bool, suspension_reasons: Any, stolen: bool, cancelled: bool,
              version: int, today: dt.date, as_of: dt.datetime) -> dict[str, Any]:
    """The enforcement view from its parts (:data:`VIEW_PARTS`): the one builder of it."""
    flags = flags_from(stolen, cancelled, suspension_reasons, expires_on, today)
    if vehicle is not None:   # VEHICLE_FIELDS, spelt out: no comprehension frame per view
        get = vehicle.get
        vehicle = {"make": get("make"), "model": get("model"), "year": get("year"),
                   "colour": get("colour")}
    return {
        "jurisdiction": jurisdiction,
        "plate": plate,
        "status": status_of(flags),
        "flags": flags,
        "expires_on": expires_on.isoformat() if expires_on else None,
        "plate_class": plate_class,
        "suspension_reasons": list(suspension_reasons or ()),
        "vehicle": vehicle,
        "smart_plate": smart_plate,
        "as_of": _utc_text(as_of),
        "version": version,
    }


_last_utc_text: tuple[dt.datetime | None, str] = (None, "")


def _utc_text(value: dt.datetime) -> str:
    """``value`` in UTC as ISO text with ``Z``; remembers the last one (a batch's views
    share one ``as_of`` object; datetimes are immutable, so identity is enough)."""
    global _last_utc_text
    last = _last_utc_text
    if last[0] is value:
        return last[1]
    text = value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    _last_utc_text = (value, text)
    return text


def owner_view(state: PlateState) -> dict[str, Any] | None:
    return owner_view_from(state.owner)


def owner_view_from(owner: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``owner`` part of the full view from the stored owner record."""
    if owner is None:
        return None
    return {k: owner.get(k) for k in ("owner_id", "name", "email", "phone", "language")}


def full_view(state: PlateState, *, today: dt.date, as_of: dt.datetime) -> dict[str, Any]:
    """The portal/operator view: the enforcement view plus the owner."""
    return {**enforcement_view(state, today=today, as_of=as_of), "owner": owner_view(state)}


_NOT_A_CHANGE = frozenset({"as_of", "version"})


def view_at(jurisdiction: str, plate: str, events: Iterable[HistoryEvent], at: dt.datetime,
            tz: dt.tzinfo, *, with_owner: bool) -> dict[str, Any] | None:
    """The view as it stood at ``at`` (None if the plate was not issued then): the fold of
    the events at or before ``at``, flags for that day in ``tz``, ``as_of`` = ``at``."""
    state = fold_until(jurisdiction, plate, events, at)
    if not state.issued:
        return None
    view = full_view if with_owner else enforcement_view
    return view(state, today=today_in(tz, at), as_of=at)


def comparable(view: Mapping[str, Any]) -> dict[str, Any]:
    """A view without ``as_of`` and ``version``: two views are the same change iff these are
    equal (an event that changes nothing enforcement sees is not a status change)."""
    return {k: v for k, v in view.items() if k not in _NOT_A_CHANGE}

