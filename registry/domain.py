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
    flags = []
    if state.stolen:
        flags.append("stolen")
    if state.cancelled:
        flags.append("cancelled")
    if state.suspension_reasons:
        flags.append("suspended")
    if state.expires_on is not None and today > state.expires_on:
        flags.append("expired")
    return flags


def status_of(flags: list[str]) -> str:
    return flags[0] if flags else "valid"



def enforcement_view(state: PlateState, *, today: dt.date, as_of: dt.datetime) -> dict[str, Any]:
    """The enforcement view (contract section 5): never any owner data."""
    flags = flags_of(state, today)
    vehicle = None
    if state.vehicle is not None:
        vehicle = {k: state.vehicle.get(k) for k in ("make", "model", "year", "colour")}
    return {
        "jurisdiction": state.jurisdiction,
        "plate": state.plate,
        "status": status_of(flags),
        "flags": flags,
        "expires_on": state.expires_on.isoformat() if state.expires_on else None,
        "plate_class": state.plate_class,
        "suspension_reasons": list(state.suspension_reasons),
        "vehicle": vehicle,
        "smart_plate": state.device_id is not None,
        "as_of": _utc_text(as_of),
        "version": state.event_count,
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
    if state.owner is None:
        return None
    return {k: state.owner.get(k) for k in ("owner_id", "name", "email", "phone", "language")}


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

