"""The notice rules as pure functions (contract section 4): no I/O, no clock.

- Windows: a reminder N days before ``expires_on`` for N in the configured
  days, and ``expired`` the day after (window -1). A window is due when today
  is at or past ``expires_on - N``; when several are due, only the nearest
  (the smallest N) is sent.
- Which dates to look at: a run on ``today`` after a run on ``last_day``
  needs only the plates whose window opened in between (``due_dates``).
- Event-driven notices: which applied events notify whom, and which late
  events do not (an event older than the plate's latest state of its kind).
- Channels: the owner's preferences, else email, else SMS, else paper;
  blockers and reasons in plain words are rendering's (``notifications.render``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.events import FoldOrder
from schemas.fold import HistoryEvent, PlateState, apply

EXPIRED_WINDOW = -1

#: Event type -> notice kind (transfers make two notices).
EVENT_KINDS: Mapping[str, tuple[str, ...]] = {
    "plate.renewed": ("renewed",),
    "plate.suspended": ("suspended",),
    "plate.reinstated": ("reinstated",),
    "plate.stolen_reported": ("stolen_reported",),
    "plate.recovered": ("recovered",),
    "plate.transferred": ("transferred_in", "transferred_out"),
    "plate.cancelled": ("cancelled",),
}

#: The part of a plate's state each notifying event type sets: a late event
#: older than the latest stored event of the same family does not notify.
FAMILY: Mapping[str, str] = {
    "plate.renewed": "expiry", "plate.issued": "issued",
    "plate.suspended": "suspension", "plate.reinstated": "suspension",
    "plate.stolen_reported": "stolen", "plate.recovered": "stolen",
    "plate.transferred": "owner",
    "plate.cancelled": "cancelled",
}
#: plate.issued also sets the expiry, the owner and clears cancelled.
ISSUED_COVERS = frozenset({"expiry", "owner", "cancelled"})

ELECTRONIC = ("email", "sms", "webhook")
FALLBACK_ORDER = ("email", "sms", "paper")


# --------------------------------------------------------------------------- windows

def windows(days: Iterable[int]) -> list[int]:
    """Reminder windows, farthest first, then the expired window (-1)."""
    return sorted(set(days), reverse=True) + [EXPIRED_WINDOW]


def due_window(expires_on: dt.date, today: dt.date, days: Iterable[int]) -> int | None:
    """The nearest window that is due on ``today`` (None: none yet)."""
    due = [w for w in windows(days) if today >= expires_on - dt.timedelta(days=w)]
    return min(due) if due else None


def due_dates(last_day: dt.date | None, today: dt.date, days: Iterable[int]) -> list[dt.date]:
    """The expiry dates whose some window opened after ``last_day`` up to ``today``.

    Without a previous run (or after a gap longer than the farthest window),
    look back as far as the farthest window: every window older than that has
    a nearer one that is due now.
    """
    ws = windows(days)
    span = max(ws) + 1
    if last_day is None or (today - last_day).days > span:
        last_day = today - dt.timedelta(days=span)
    out: set[dt.date] = set()
    day = last_day + dt.timedelta(days=1)
    while day <= today:
        out.update(day + dt.timedelta(days=w) for w in ws)
        day += dt.timedelta(days=1)
    return sorted(out)


@dataclass(frozen=True, slots=True)
class Draft:
    """A notice to create (the store gives it an id and stores it once)."""

    dedupe_key: str
    kind: str
    plate_key: str
    recipient: Mapping[str, Any]          # the owner's contact data and language
    context: dict[str, Any] = field(default_factory=dict)
    expires_on: dt.date | None = None
    window_days: int | None = None

    @property
    def owner_id(self) -> str:
        return str(self.recipient["owner_id"])

    @property
    def language(self) -> str:
        return "fr" if self.recipient.get("language") == "fr" else "en"


def recipient_of(state: PlateState) -> dict[str, Any] | None:
    """The owner's contact data a notice needs (None: no owner to notify)."""
    owner = state.owner
    if not owner or not owner.get("owner_id"):
        return None
    out = {k: owner.get(k) for k in ("owner_id", "name", "email", "phone", "language", "address")}
    out["device_id"] = state.device_id
    return out


def window_draft(state: PlateState, today: dt.date, days: Iterable[int]) -> Draft | None:
    """The reminder or expired notice due for a plate on ``today``, if any."""
    if not state.issued or state.cancelled or state.expires_on is None:
        return None
    window = due_window(state.expires_on, today, days)
    recipient = recipient_of(state)
    if window is None or recipient is None:
        return None
    expires = state.expires_on.isoformat()
    context: dict[str, Any] = {"expires_on": expires}
    if window == EXPIRED_WINDOW:
        kind = "expired"
    else:
        kind = "renewal_reminder"
        context["days_before"] = window
        if state.suspension_reasons:
            context["blocked_by"] = list(state.suspension_reasons)
    return Draft(f"window:{state.plate_key}:{expires}:{window}", kind, state.plate_key,
                 recipient, context, state.expires_on, window)


# --------------------------------------------------------------------------- events

@dataclass(frozen=True, slots=True)
class AppliedEvent(FoldOrder):
    """A newly applied event: its id, type, fold position and data, and its source
    (an event is identified by (source, id))."""

    event_id: str
    type: str
    time: dt.datetime
    data: Mapping[str, Any]
    source: str = ""


def superseded(event: AppliedEvent, earlier_applied: Iterable[HistoryEvent]) -> bool:
    """Whether a stored event of the same family sorts after ``event`` (a late event)."""
    family = FAMILY.get(event.type)
    for other in earlier_applied:
        other_family = FAMILY.get(other.type)
        same = other_family == family or (other_family == "issued" and family in ISSUED_COVERS)
        if same and other.sort_key > event.sort_key:
            return True
    return False


def _context(event: AppliedEvent, after: PlateState) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    if after.expires_on is not None:
        ctx["expires_on"] = after.expires_on.isoformat()
    for key in ("reason", "agency"):
        if event.data.get(key) is not None:
            ctx[key] = event.data[key]
    if event.type in ("plate.suspended", "plate.reinstated") and after.suspension_reasons:
        ctx["blocked_by"] = list(after.suspension_reasons)
    return ctx


def drafts_for_event(event: AppliedEvent, before: PlateState, after: PlateState) -> list[Draft]:
    """The notices one applied event makes: one per kind and recipient."""
    out: list[Draft] = []
    if not after.issued:
        return out
    for kind in EVENT_KINDS.get(event.type, ()):
        recipient = recipient_of(before if kind == "transferred_out" else after)
        if recipient is None:
            continue
        if kind == "transferred_out" and recipient["owner_id"] == after.owner_id:
            continue    # "transferred" to the same owner: nobody left
        out.append(Draft(f"event:{event.source}:{event.event_id}:{kind}:{recipient['owner_id']}",
                         kind,
                         after.plate_key, recipient, _context(event, after)))
    return out


def event_drafts(start: PlateState, events: Sequence[AppliedEvent],
                 new_ids: frozenset[tuple[str, str]] | set[tuple[str, str]]) -> list[Draft]:
    """Notices for the events of ``new_ids`` ((source, id) pairs) among ``events`` folded
    from ``start``.

    ``events`` are in fold order: the new events only (folded from the stored
    state), or the whole history (a re-fold after a late event). An event
    whose family has a later event that was stored before (not new) does not
    notify.
    """
    stored_before = [HistoryEvent(e.event_id, e.type, e.time, e.data, e.source)
                     for e in events if e.identity not in new_ids]
    out: list[Draft] = []
    state = start
    for ev in events:
        before = state
        state = apply(state, ev.type, ev.data, ev.time, ev.event_id)
        if ev.identity not in new_ids or ev.type not in EVENT_KINDS:
            continue
        if stored_before and superseded(ev, stored_before):
            continue
        out.extend(drafts_for_event(ev, before, state))
    return out


# --------------------------------------------------------------------------- channels

def usable(channel: str, recipient: Mapping[str, Any], webhook_url: str | None) -> bool:
    if channel == "email":
        return bool(recipient.get("email"))
    if channel == "sms":
        return bool(recipient.get("phone"))
    if channel == "webhook":
        return bool(webhook_url)
    if channel == "plate_display":
        return bool(recipient.get("device_id"))
    return channel == "paper"


def choose_channels(recipient: Mapping[str, Any], preferred: Sequence[str] | None,
                    webhook_url: str | None = None) -> list[str]:
    """Channels in the order to try: the owner's usable preferred channels, then the
    usable ones of email, SMS, paper as fallbacks; paper always ends the chain.

    ``plate_display`` (paired plates, when preferred or by default) goes
    alongside the chain, not in it.
    """
    chain: list[str] = []
    for ch in preferred or ():
        if ch != "plate_display" and ch not in chain and usable(ch, recipient, webhook_url):
            chain.append(ch)
    for ch in FALLBACK_ORDER:
        if ch not in chain and usable(ch, recipient, webhook_url):
            chain.append(ch)
    if (not preferred or "plate_display" in preferred) and usable(
            "plate_display", recipient, webhook_url):
        chain.append("plate_display")
    return chain


def fallback_chain(channels: Sequence[str]) -> list[str]:
    """The channels tried one after the other (all but plate_display)."""
    return [c for c in channels if c != "plate_display"]


def next_channel(channels: Sequence[str], failed: str) -> str | None:
    """The channel after ``failed`` in the chain (None: the chain is exhausted)."""
    chain = fallback_chain(channels)
    if failed not in chain:
        return None
    i = chain.index(failed)
    return chain[i + 1] if i + 1 < len(chain) else None
