"""``at``: the view as it stood at a past instant (contract section 5), against a reference
fold over random histories, and the expiry boundary in the registry's time zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.domain import view_at
from schemas.fold import HistoryEvent

TZ = ZoneInfo("America/Toronto")
T0 = dt.datetime(2026, 10, 25, tzinfo=dt.UTC)
REASONS = ("insurance_lapsed", "unpaid_fines", "court_order")
OWNER = {"owner_id": "own-1", "name": "Jane Doe", "language": "en"}


def _event(kind: str, data: dict, minute: int, eid: str) -> HistoryEvent:
    return HistoryEvent(eid, kind, T0 + dt.timedelta(minutes=minute), data)


EVENTS = st.one_of(
    st.builds(lambda d: ("plate.issued", {"plate_class": "passenger", "owner": OWNER,
                                          "expires_on": d.isoformat()}),
              st.dates(dt.date(2026, 10, 20), dt.date(2026, 11, 30))),
    st.builds(lambda d: ("plate.renewed", {"expires_on": d.isoformat()}),
              st.dates(dt.date(2026, 10, 20), dt.date(2026, 11, 30))),
    st.builds(lambda r: ("plate.suspended", {"reason": r}), st.sampled_from(REASONS)),
    st.builds(lambda r: ("plate.reinstated", {} if r is None else {"reason": r}),
              st.none() | st.sampled_from(REASONS)),
    st.just(("plate.stolen_reported", {"agency": "OPP", "report_id": "r1"})),
    st.just(("plate.recovered", {})),
    st.just(("plate.cancelled", {"reason": "surrendered"})),
)
# Minutes over about three weeks, so `at` and expiry dates fall on both sides of midnights.
HISTORIES = st.lists(st.tuples(EVENTS, st.integers(0, 30_000), st.integers(0, 5)),
                     max_size=25)


def reference(history: list[tuple[str, dict, dt.datetime, str]],
              at: dt.datetime) -> dict | None:
    """An independent fold: only what the enforcement status needs, plain dicts."""
    state = {"issued": False, "expires": None, "susp": set(), "stolen": False,
             "cancelled": False, "n": 0}
    for kind, data, time_, _eid in sorted(history, key=lambda e: (e[2], e[3])):
        if time_ > at:
            continue
        state["n"] += 1
        if kind == "plate.issued":
            state.update(issued=True, cancelled=False,
                         expires=dt.date.fromisoformat(data["expires_on"]))
        elif kind == "plate.renewed":
            state["expires"] = dt.date.fromisoformat(data["expires_on"])
        elif kind == "plate.suspended":
            state["susp"] = state["susp"] | {data["reason"]}
        elif kind == "plate.reinstated":
            state["susp"] = set() if "reason" not in data else state["susp"] - {data["reason"]}
        elif kind in ("plate.stolen_reported", "plate.recovered"):
            state["stolen"] = kind == "plate.stolen_reported"
        elif kind == "plate.cancelled":
            state["cancelled"] = True
    if not state["issued"]:
        return None
    local_day = at.astimezone(TZ).date()   # the registry's calendar day at `at`
    flags = [name for name, holds in (
        ("stolen", state["stolen"]), ("cancelled", state["cancelled"]),
        ("suspended", bool(state["susp"])),
        ("expired", state["expires"] is not None and local_day > state["expires"])) if holds]
    return {"flags": flags, "status": flags[0] if flags else "valid", "version": state["n"],
            "expires_on": state["expires"].isoformat(),
            "suspension_reasons": sorted(state["susp"])}


@settings(max_examples=300, deadline=None)
@given(HISTORIES, st.integers(-60, 31_000), st.sampled_from([dt.UTC, TZ,
                                                             dt.timezone(dt.timedelta(hours=9))]))
def test_view_at_equals_the_reference_fold(picks, at_minute: int, offset_zone) -> None:
    history = [(kind, data, T0 + dt.timedelta(minutes=minute), f"e{i:03d}-{tie}")
               for i, ((kind, data), minute, tie) in enumerate(picks)]
    at = (T0 + dt.timedelta(minutes=at_minute)).astimezone(offset_zone)
    events = [HistoryEvent(eid, kind, time_, data) for kind, data, time_, eid in history]
    got = view_at("CA-ON", "ABC123", events, at, TZ, with_owner=False)
    want = reference(history, at)
    if want is None:
        assert got is None
        return
    assert got is not None and "owner" not in got
    assert {k: got[k] for k in want} == want
    assert got["as_of"] == at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def test_expiry_boundary_is_midnight_in_the_registry_time_zone() -> None:
    """Expires 2026-10-31: valid all of that day in Toronto (EDT, -04:00), even when UTC is
    already on 1 November; expired from 00:00 Toronto time."""
    events = [_event("plate.issued", {"plate_class": "passenger", "owner": OWNER,
                                      "expires_on": "2026-10-31"}, 0, "a")]

    def status(text: str) -> str:
        view = view_at("CA-ON", "ABC123", events, dt.datetime.fromisoformat(text), TZ,
                       with_owner=True)
        assert view is not None and view["owner"]["owner_id"] == "own-1"
        return view["status"]

    assert status("2026-10-31T23:59:59-04:00") == "valid"
    assert status("2026-11-01T03:59:59+00:00") == "valid"     # 23:59:59 in Toronto
    assert status("2026-11-01T04:00:00+00:00") == "expired"   # midnight in Toronto
    assert status("2026-11-01T00:00:00-04:00") == "expired"


def test_events_after_at_are_not_folded_and_before_issue_is_unknown() -> None:
    events = [_event("plate.issued", {"plate_class": "passenger", "owner": OWNER,
                                      "expires_on": "2027-01-01"}, 10, "a"),
              _event("plate.stolen_reported", {"agency": "OPP", "report_id": "r"}, 20, "b")]
    assert view_at("CA-ON", "X1", events, T0 + dt.timedelta(minutes=9), TZ,
                   with_owner=False) is None
    at_issue = view_at("CA-ON", "X1", events, T0 + dt.timedelta(minutes=10), TZ,
                       with_owner=False)
    assert at_issue is not None and (at_issue["status"], at_issue["version"]) == ("valid", 1)
    later = view_at("CA-ON", "X1", events, T0 + dt.timedelta(minutes=20), TZ, with_owner=False)
    assert later is not None and (later["status"], later["version"]) == ("stolen", 2)
