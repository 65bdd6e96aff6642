"""Pure batch logic of the registry consumer (no I/O; tested without servers).

The consumer hands a batch of Kafka records through these steps:

1. :func:`parse_values` turns raw values into :class:`Parsed` events or
   :class:`Rejected` records (``schemas.validation`` decides the reasons); a message in
   binary content mode (``ce_`` headers) is first made the structured event object
   (``schemas.content_modes``). Then ``registry.consumer.signatures.verify`` checks who
   signed each message (in the batch's transaction, where the producers are current).
2. :func:`classify` splits the parsed events, given the fingerprints already
   stored for their (source, id) pairs, into new events to insert, duplicates
   and ``id_conflict`` rejections. The first occurrence of a pair stands.
3. :func:`plan_plates` folds the new events into the plates' current states:
   incrementally when every new event is after the plate's last applied
   (time, id) (an equal (time, id) from another source re-folds too, so the
   source tiebreaker is kept), otherwise the plate needs a re-fold from its history
   (:func:`fold_history`).
4. :func:`status_changes` compares the enforcement views before and after.

A plate whose stored state or history cannot be folded (a time outside the
accepted range, such as the ``-infinity`` an old event of year 1 became, or a
row the fold fails on) raises :class:`Unfoldable` for that plate only: the
consumer quarantines it and goes on with every other plate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from registry.domain import comparable, enforcement_view, flags_of
from schemas._types import MAX_YEAR, MIN_YEAR, time_in_range
from schemas.content_modes import kafka_binary_event
from schemas.events import EventType, FoldOrder
from schemas.fold import HistoryEvent, PlateState, apply
from schemas.policy import Policy, reason_of
from schemas.signing import CE_PREFIX, PRODUCER_HEADER, Headers
from schemas.validation import Rejection, parse_event_bytes, parse_event_obj

if TYPE_CHECKING:   # the parse workers import this module: no Kafka client there
    from platereg.kafka import Record

KNOWN_TYPES = frozenset(t.value for t in EventType)


@dataclass(frozen=True, slots=True)
class Parsed(FoldOrder):
    """A valid event, normalized, with where it came from."""

    event_id: str
    type: str
    source: str
    time: dt.datetime
    plate_key: str
    jurisdiction: str
    plate: str
    data: dict[str, Any]
    fingerprint: str
    partition: int
    offset: int
    #: ``data`` as JSON text, when the parser already has it (``orjson.dumps(data)``);
    #: spares the store a second serialization. Not part of the event's value.
    data_json: str | None = field(default=None, compare=False, repr=False)
    #: Who sent it: the producer the message names (its signature is checked before
    #: anything is stored) and the CloudEvents ``authcontext`` the producer stamped
    #: (``authtype``, ``authid``; the ingest API's: ``api_key`` and the key id).
    producer: str | None = None
    authtype: str | None = None
    authid: str | None = None

    def history(self) -> HistoryEvent:
        return HistoryEvent(event_id=self.event_id, type=self.type, time=self.time, data=self.data,
                            source=self.source)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record for the dead-letter topic."""

    partition: int
    offset: int
    reason: str
    detail: str
    type_label: str      # a known event type, or "invalid" (metrics label; never raw input)


def _type_label(value: bytes | None, headers: Headers | None = None) -> str:
    """The event type for metrics, when the message says one we know; never raw text."""
    if headers is not None:
        kind: object = next((v.decode("utf-8", "replace") for n, v in headers
                             if n == "ce_type" and v is not None), None)
        return kind if isinstance(kind, str) and kind in KNOWN_TYPES else "invalid"
    if value is None or len(value) > 65536:
        return "invalid"
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "invalid"
    kind = obj.get("type") if isinstance(obj, dict) else None
    return kind if isinstance(kind, str) and kind in KNOWN_TYPES else "invalid"


def _text_extension(extra: dict[str, Any] | None, name: str) -> str | None:
    value = (extra or {}).get(name)
    return value if isinstance(value, str) else None


def parse_value(value: bytes | None, partition: int, offset: int, now: dt.datetime,
                binary: Headers | None = None, producer: str | None = None) -> Parsed | Rejected:
    """One message's value (with ``binary``: the headers of a binary-mode message) as an
    event; ``producer`` is the producer the message names."""
    try:
        if binary is None:
            event = parse_event_bytes(value, now=now)
        else:
            event = parse_event_obj(kafka_binary_event(binary, value), now=now)
    except Rejection as rej:
        return Rejected(partition, offset, str(rej.reason), rej.detail,
                        _type_label(value, binary))
    content, fingerprint = event.content_and_fingerprint()
    jurisdiction, _, plate = event.subject.partition("/")
    extra = event.extensions
    return Parsed(
        event_id=event.id, type=event.type, source=event.source, time=event.time,
        plate_key=event.subject, jurisdiction=jurisdiction, plate=plate,
        data=content["data"], fingerprint=fingerprint,
        partition=partition, offset=offset, producer=producer,
        authtype=_text_extension(extra, "authtype"), authid=_text_extension(extra, "authid"),
    )


def message_parts(headers: Headers) -> tuple[Headers | None, str | None]:
    """(the headers when the message is in binary mode, else None; the producer it names)."""
    binary = None
    producer = None
    for name, value in headers:
        if name == PRODUCER_HEADER:
            if producer is None:
                producer = (value or b"").decode("utf-8", "replace")
        elif binary is None and name.startswith(CE_PREFIX):
            binary = headers
    return binary, producer


def parse_values(records: Sequence[Record], now: dt.datetime) -> list[Parsed | Rejected]:
    """Parse every record in this process."""
    return [parse_value(r.value, r.partition, r.offset, now, *message_parts(r.headers))
            for r in records]


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


class CompactParsed(NamedTuple):
    """A valid event as a parse worker sends it back: what :class:`Parsed` needs besides
    the record's position and producer, in types that are cheap to pickle."""

    event_id: str
    type: str
    source: str
    time_us: int          # microseconds since the epoch
    subject: str          # the plate key
    data_json: str        # ``orjson.dumps(data).decode()``: a str is its size, while the
                          # bytes orjson returns keep its whole (larger) output buffer
    fingerprint: str
    authtype: str | None
    authid: str | None


class CompactRejected(NamedTuple):
    """A rejected record as a parse worker sends it back (see :class:`Rejected`)."""

    reason: str
    detail: str
    type_label: str


def parse_compact(values: Sequence[bytes | None], now: dt.datetime,
                  binary: Sequence[Headers | None] | None = None,
                  ) -> list[CompactParsed | CompactRejected]:
    """Parse in a worker process; returns small named tuples that are cheap to pickle.
    ``binary``: per value, the headers of a binary-mode message or None (all None when
    not given)."""
    out: list[CompactParsed | CompactRejected] = []
    for i, value in enumerate(values):
        ev = parse_value(value, 0, 0, now, None if binary is None else binary[i])
        if isinstance(ev, Rejected):
            out.append(CompactRejected(ev.reason, ev.detail, ev.type_label))
        else:
            out.append(CompactParsed(ev.event_id, ev.type, ev.source,
                                     (ev.time - _EPOCH) // _MICROSECOND, ev.plate_key,
                                     orjson.dumps(ev.data).decode(), ev.fingerprint,
                                     ev.authtype, ev.authid))
    return out


def expand_compact(compact: Sequence[CompactParsed | CompactRejected],
                   records: Sequence[Record]) -> list[Parsed | Rejected]:
    """The :func:`parse_compact` results as :class:`Parsed` / :class:`Rejected`."""
    out: list[Parsed | Rejected] = []
    for c, r in zip(compact, records, strict=True):
        if isinstance(c, CompactRejected):
            out.append(Rejected(r.partition, r.offset, c.reason, c.detail, c.type_label))
        else:
            jurisdiction, _, plate = c.subject.partition("/")
            # positional, in Parsed's field order (keywords cost more, per event)
            out.append(Parsed(c.event_id, c.type, c.source,
                              _EPOCH + dt.timedelta(microseconds=c.time_us), c.subject,
                              jurisdiction, plate, orjson.loads(c.data_json), c.fingerprint,
                              r.partition, r.offset, c.data_json,
                              message_parts(r.headers)[1], c.authtype, c.authid))
    return out


def authorize(events: Iterable[Parsed], policy: Policy) -> tuple[list[Parsed], list[Rejected]]:
    """Split events into those the source policy allows and ``unauthorized_source``
    rejections (contract section 2, "Who may say what")."""
    allowed: list[Parsed] = []
    refused: list[Rejected] = []
    for ev in events:
        reason = reason_of(ev.type, ev.data)
        if policy.allows(ev.source, ev.type, reason):
            allowed.append(ev)
        else:
            refused.append(Rejected(ev.partition, ev.offset, "unauthorized_source",
                                    policy.explain(ev.source, ev.type, reason), ev.type))
    return allowed, refused


@dataclass
class Classified:
    new: list[Parsed] = field(default_factory=list)
    duplicates: list[Parsed] = field(default_factory=list)
    conflicts: list[Rejected] = field(default_factory=list)


def classify(parsed: Iterable[Parsed], known: Mapping[tuple[str, str], str]) -> Classified:
    """Split events, in consumption order, by the fingerprint that stands for each
    (source, id).

    ``known`` maps (source, id) pairs already in the history to their fingerprints.
    A pair seen first in this batch stands with its first occurrence. The same id
    from two sources is two events.
    """
    out = Classified()
    standing = dict(known)
    for ev in parsed:
        identity = (ev.source, ev.event_id)
        fp = standing.get(identity)
        if fp is None:
            standing[identity] = ev.fingerprint
            out.new.append(ev)
        elif fp == ev.fingerprint:
            out.duplicates.append(ev)
        else:
            out.conflicts.append(Rejected(
                ev.partition, ev.offset, "id_conflict",
                "id: an event with this source and id and different content was accepted "
                "first", ev.type,
            ))
    return out


class Unfoldable(Exception):
    """A plate's stored state or history cannot be folded.

    ``reason`` is safe to log (a rule or an exception class, never data);
    ``event_id`` is the stored event at fault, when one is.
    """

    def __init__(self, reason: str, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id


STORED_TIME_REASON = (f"stored time outside {MIN_YEAR}-01-01 .. {MAX_YEAR}-12-31 UTC "
                      "(for example -infinity)")


def _sane_time(value: object) -> bool:
    return isinstance(value, dt.datetime) and time_in_range(value)


def _text_or_none(value: object) -> bool:
    return value is None or isinstance(value, str)


def state_shape_problem(state: PlateState) -> str | None:
    """The first field of ``state`` that cannot be written to ``plates`` or viewed."""
    owner = state.owner
    checks = (
        ("plate_class", _text_or_none(state.plate_class)),
        ("expires_on", state.expires_on is None or (isinstance(state.expires_on, dt.date)
                                                    and not isinstance(state.expires_on,
                                                                       dt.datetime))),
        ("vehicle", state.vehicle is None or isinstance(state.vehicle, Mapping)),
        ("owner", owner is None or (isinstance(owner, Mapping)
                                    and _text_or_none(owner.get("owner_id")))),
        ("device_id", _text_or_none(state.device_id)),
        ("suspension_reasons", all(isinstance(r, str) for r in state.suspension_reasons)),
        ("last_event_id", _text_or_none(state.last_event_id)),
    )
    return next((name for name, ok in checks if not ok), None)


def check_state(state: PlateState) -> None:
    """Raise :class:`Unfoldable` when a plate state (stored, or folded from stored rows)
    has a time outside the accepted range or a field of the wrong shape."""
    if state.last_event_time is not None and not _sane_time(state.last_event_time):
        raise Unfoldable(STORED_TIME_REASON, state.last_event_id)
    problem = state_shape_problem(state)
    if problem is not None:
        raise Unfoldable(f"stored {problem} has the wrong type",
                         state.last_event_id if isinstance(state.last_event_id, str) else None)


def _apply_checked(state: PlateState, kind: str, data: Any, time: dt.datetime,
                   event_id: str) -> PlateState:
    try:
        return apply(state, kind, data, time, event_id)
    except Exception as exc:  # noqa: BLE001 - any failure of one stored row is that plate's
        raise Unfoldable(f"the fold failed ({type(exc).__name__})",
                         event_id) from None


def fold_history(jurisdiction: str, plate: str, events: Iterable[HistoryEvent]) -> PlateState:
    """:func:`schemas.fold.fold` of stored events, raising :class:`Unfoldable` for a row
    with an insane time or one the fold fails on."""
    events = list(events)
    for ev in events:
        if not _sane_time(ev.time):
            raise Unfoldable(STORED_TIME_REASON, ev.event_id)
    state = PlateState(jurisdiction=jurisdiction, plate=plate)
    for ev in sorted(events, key=lambda e: e.sort_key):
        state = _apply_checked(state, ev.type, ev.data, ev.time, ev.event_id)
    check_state(state)
    return state


def plan_plates(
    old: Mapping[str, PlateState | None], new: Mapping[str, list[Parsed]],
    broken: dict[str, Unfoldable] | None = None,
) -> tuple[dict[str, PlateState], list[str]]:
    """New states of the plates that can be folded incrementally, and the keys to re-fold.

    A plate is re-folded from its history when one of its new events sorts
    before (or at) the plate's last applied (time, id). With ``broken``, a plate
    whose stored state cannot be folded onto is put there (key -> the
    :class:`Unfoldable`) instead of raising.
    """
    states: dict[str, PlateState] = {}
    refold: list[str] = []
    for key, events in new.items():
        events = sorted(events, key=lambda e: e.sort_key)
        state = old.get(key)
        try:
            if state is None:
                first = events[0]
                state = PlateState(jurisdiction=first.jurisdiction, plate=first.plate)
            else:
                check_state(state)
                # (time, id) only: an equal (time, id) from another source may sort
                # before the stored last event, so it re-folds too.
                first_at = (events[0].time, events[0].event_id)
                if state.fold_position is not None and first_at <= state.fold_position:
                    refold.append(key)
                    continue
            for ev in events:
                state = _apply_checked(state, ev.type, ev.data, ev.time, ev.event_id)
        except Unfoldable as exc:
            if broken is None:
                raise
            broken[key] = exc
            continue
        states[key] = state
    return states, refold


@dataclass(frozen=True, slots=True)
class StatusChange:
    plate_key: str
    view: dict[str, Any]
    flagged: bool
    was_flagged: bool


def view_of(state: PlateState | None, today: dt.date,
            as_of: dt.datetime) -> dict[str, Any] | None:
    """The enforcement view, or None for a plate that does not exist (no plate.issued)."""
    if state is None or not state.issued:
        return None
    return enforcement_view(state, today=today, as_of=as_of)


def status_change(previous: Mapping[str, Any] | None, current: Mapping[str, Any] | None,
                  plate_key: str) -> StatusChange | None:
    """The change to record when ``current`` differs from ``previous`` (views or None)."""
    if current is None:
        return None
    if previous is not None and comparable(previous) == comparable(current):
        return None
    return _change(plate_key, dict(current),
                   was_flagged=previous is not None and previous["status"] != "valid")


def _change(plate_key: str, view: dict[str, Any], *, was_flagged: bool) -> StatusChange:
    """The one definition of a change: ``flagged`` when the new status is not valid."""
    return StatusChange(plate_key=plate_key, view=view, flagged=view["status"] != "valid",
                        was_flagged=was_flagged)


def _view_inputs(state: PlateState | None) -> tuple[Any, ...] | None:
    """Everything the enforcement view depends on (besides the date)."""
    if state is None or not state.issued:
        return None
    vehicle = state.vehicle
    return (state.stolen, state.cancelled, state.suspension_reasons, state.expires_on,
            state.plate_class, state.device_id is None,
            None if vehicle is None else (vehicle.get("make"), vehicle.get("model"),
                                          vehicle.get("year"), vehicle.get("colour")))


def status_changes(old: Mapping[str, PlateState | None], new: Mapping[str, PlateState],
                   today: dt.date, as_of: dt.datetime) -> list[StatusChange]:
    """One change per plate whose enforcement view differs after the batch."""
    out = []
    for key in sorted(new):
        before = old.get(key)
        after = new[key]
        if _view_inputs(before) == _view_inputs(after):
            continue   # same inputs, same view: skip building both
        # status_change() without the previous view: the view is a one-to-one function
        # of these inputs (for one plate, day and as_of), so different inputs mean
        # different views; only the previous status is needed. The fresh view needs no copy.
        current = view_of(after, today, as_of)
        if current is None:
            continue
        was_flagged = before is not None and before.issued and bool(flags_of(before, today))
        out.append(_change(key, current, was_flagged=was_flagged))
    return out
