"""The plate state and its fold: contract semantics shared by the services.

A plate's state is the fold of its accepted events sorted by (time, id)
(contract section 2), with the event's source as the last tiebreaker (events are
identified by (source, id), so two may share a time and an id). ``apply`` takes
the event type and its JSON ``data`` (as stored in ``plate_events.data``), so
the same code folds events fresh from Kafka and events re-read from the history.

It lives here, beside the event models, because more than one service folds:
the registry consumer keeps ``plates`` up to date with it, and the notices rules
fold a plate's events to see what each one changed. ``today_in`` is the
registry's calendar day that expiries and reminders are counted in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.events import FoldOrder


@dataclass(frozen=True, slots=True)
class PlateState:
    """Current state of one plate; ``issued`` is False until plate.issued is folded."""

    jurisdiction: str
    plate: str
    issued: bool = False
    plate_class: str | None = None
    expires_on: dt.date | None = None
    vehicle: Mapping[str, Any] | None = None
    owner: Mapping[str, Any] | None = None
    device_id: str | None = None
    suspension_reasons: tuple[str, ...] = ()
    stolen: bool = False
    cancelled: bool = False
    last_event_time: dt.datetime | None = None
    last_event_id: str | None = None
    event_count: int = 0

    @property
    def plate_key(self) -> str:
        return f"{self.jurisdiction}/{self.plate}"

    @property
    def owner_id(self) -> str | None:
        return None if self.owner is None else self.owner.get("owner_id")

    @property
    def fold_position(self) -> tuple[dt.datetime, str] | None:
        if self.last_event_time is None or self.last_event_id is None:
            return None
        return (self.last_event_time, self.last_event_id)


def _date(value: Any) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value)


def _owner(value: Mapping[str, Any]) -> dict[str, Any]:
    owner = dict(value)
    owner.setdefault("language", "en")
    return owner


def apply(state: PlateState, event_type: str, data: Mapping[str, Any] | None,
          event_time: dt.datetime, event_id: str) -> PlateState:
    """The state after one more event (the caller keeps (time, id) order).

    Plain code: the fields the event changes are computed into locals and the new
    state is built with one positional call (``dataclasses.replace`` costs about twice
    as much, once per folded event; see docs/benchmarks.md)."""
    data = data or {}
    issued, plate_class, expires_on, vehicle, owner = (
        state.issued, state.plate_class, state.expires_on, state.vehicle, state.owner)
    device_id, reasons, stolen, cancelled = (
        state.device_id, state.suspension_reasons, state.stolen, state.cancelled)
    if event_type == "plate.issued":
        issued, cancelled = True, False
        plate_class = data.get("plate_class", plate_class)
        if "expires_on" in data:
            expires_on = _date(data["expires_on"])
        if data.get("vehicle") is not None:
            vehicle = dict(data["vehicle"])
        if data.get("owner") is not None:
            owner = _owner(data["owner"])
        if data.get("device_id") is not None:
            device_id = data["device_id"]
    elif event_type == "plate.renewed":
        expires_on = _date(data["expires_on"])
    elif event_type == "plate.suspended":
        reasons = tuple(sorted(set(reasons) | {data["reason"]}))
    elif event_type == "plate.reinstated":
        reason = data.get("reason")
        reasons = () if reason is None else tuple(r for r in reasons if r != reason)
    elif event_type == "plate.stolen_reported":
        stolen = True
    elif event_type == "plate.recovered":
        stolen = False
    elif event_type == "plate.transferred":
        owner = _owner(data["owner"])
    elif event_type == "plate.owner_updated":
        if owner is not None:
            owner = {**owner, **{k: v for k, v in data.items()
                                 if k in ("name", "email", "phone", "language", "address")}}
    elif event_type == "plate.cancelled":
        cancelled = True
    elif event_type == "plate.device_paired":
        device_id = data["device_id"]
    elif event_type == "plate.device_unpaired":
        device_id = None
    else:
        raise ValueError(f"unknown event type {event_type!r}")
    return PlateState(state.jurisdiction, state.plate, issued, plate_class, expires_on,
                      vehicle, owner, device_id, reasons, stolen, cancelled, event_time,
                      event_id, state.event_count + 1)


@dataclass(frozen=True, slots=True)
class HistoryEvent(FoldOrder):
    """One stored event, as much of it as the fold needs."""

    event_id: str
    type: str
    time: dt.datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""


def fold(jurisdiction: str, plate: str, events: Iterable[HistoryEvent]) -> PlateState:
    """The state of a plate from its whole history, in (time, id, source) order."""
    state = PlateState(jurisdiction=jurisdiction, plate=plate)
    for ev in sorted(events, key=lambda e: e.sort_key):
        state = apply(state, ev.type, ev.data, ev.time, ev.event_id)
    return state


def fold_until(jurisdiction: str, plate: str, events: Iterable[HistoryEvent],
               at: dt.datetime) -> PlateState:
    """The state as it stood at ``at``: the fold of the events whose ``time`` is at or
    before it (contract section 5, ``at``)."""
    return fold(jurisdiction, plate, (ev for ev in events if ev.time <= at))


def today_in(tz: dt.tzinfo, now: dt.datetime | None = None) -> dt.date:
    """The registry's calendar date (``PLATEREG_TIMEZONE``) at ``now``."""
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(tz).date()
