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
from dataclasses import dataclass, field, fields
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


_STATE_FIELDS = tuple(f.name for f in fields(PlateState))


def _compile_builders() -> tuple[Any, Any]:
    """``replace(state, changes)`` and ``from_values(values)``: a frozen ``PlateState``
    built through its slots' own setters, one line per field (the fold makes one per
    event; the dataclass ``__init__`` or a loop over the fields costs more: see
    docs/benchmarks.md)."""
    env: dict[str, Any] = {"new": object.__new__, "PlateState": PlateState}
    replace = ["def replace(state, changes):", "    s = new(PlateState)", "    get = changes.get"]
    from_values = ["def from_values(v):", "    s = new(PlateState)"]
    for i, name in enumerate(_STATE_FIELDS):
        env[f"set_{name}"] = PlateState.__dict__[name].__set__   # type: ignore[index]
        replace.append(f"    set_{name}(s, get({name!r}, state.{name}))")
        from_values.append(f"    set_{name}(s, v[{i}])")
    exec("\n".join([*replace, "    return s", *from_values, "    return s"]), env)  # noqa: S102
    return env["replace"], env["from_values"]


#: ``dataclasses.replace(state, **changes)`` for valid field names; and a state from
#: its field values in field order (no defaults, no checks: the values are a state's).
_replace, state_from_values = _compile_builders()


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
    """The state after one more event (the caller keeps (time, id) order)."""
    data = data or {}
    changes: dict[str, Any] = {
        "last_event_time": event_time,
        "last_event_id": event_id,
        "event_count": state.event_count + 1,
    }
    if event_type == "plate.issued":
        changes.update(issued=True, cancelled=False)
        if "plate_class" in data:
            changes["plate_class"] = data["plate_class"]
        if "expires_on" in data:
            changes["expires_on"] = _date(data["expires_on"])
        if data.get("vehicle") is not None:
            changes["vehicle"] = dict(data["vehicle"])
        if data.get("owner") is not None:
            changes["owner"] = _owner(data["owner"])
        if data.get("device_id") is not None:
            changes["device_id"] = data["device_id"]
    elif event_type == "plate.renewed":
        changes["expires_on"] = _date(data["expires_on"])
    elif event_type == "plate.suspended":
        changes["suspension_reasons"] = tuple(
            sorted(set(state.suspension_reasons) | {data["reason"]})
        )
    elif event_type == "plate.reinstated":
        reason = data.get("reason")
        changes["suspension_reasons"] = (
            () if reason is None else tuple(r for r in state.suspension_reasons if r != reason)
        )
    elif event_type == "plate.stolen_reported":
        changes["stolen"] = True
    elif event_type == "plate.recovered":
        changes["stolen"] = False
    elif event_type == "plate.transferred":
        changes["owner"] = _owner(data["owner"])
    elif event_type == "plate.owner_updated":
        if state.owner is not None:
            owner = dict(state.owner)
            owner.update({k: v for k, v in data.items()
                          if k in ("name", "email", "phone", "language", "address")})
            changes["owner"] = owner
    elif event_type == "plate.cancelled":
        changes["cancelled"] = True
    elif event_type == "plate.device_paired":
        changes["device_id"] = data["device_id"]
    elif event_type == "plate.device_unpaired":
        changes["device_id"] = None
    else:
        raise ValueError(f"unknown event type {event_type!r}")
    return _replace(state, changes)


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
