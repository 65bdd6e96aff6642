"""Pure notice rules: windows, due dates, event notices, channels, texts, signatures."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser

import pytest

from notifications import rules
from notifications.channels import Result, classify_response, retry_after_seconds, sign, verify
from notifications.dispatcher import backoff, decide
from notifications.render import render
from platereg.settings import load_settings
from schemas.fold import PlateState, apply

DAYS = [60, 30, 7]
E = dt.date(2027, 3, 31)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
OWNER = {"owner_id": "o1", "name": "Ann", "email": "ann@example.org", "language": "en"}


def issued(expires: dt.date = E, **owner: object) -> PlateState:
    state = PlateState("CA-ON", "ABC123")
    return apply(state, "plate.issued", {"plate_class": "passenger",
                                         "expires_on": expires.isoformat(),
                                         "owner": {**OWNER, **owner}}, T0, "e0")


@pytest.mark.parametrize(("days_before", "expected"), [
    (61, None), (60, 60), (31, 60), (30, 30), (8, 30), (7, 7), (0, 7), (-1, -1), (-400, -1)])
def test_due_window_is_the_nearest_open_one(days_before: int, expected: int | None) -> None:
    assert rules.due_window(E, E - dt.timedelta(days=days_before), DAYS) == expected


def test_due_dates_after_one_day_are_the_four_window_dates() -> None:
    today = dt.date(2026, 5, 10)
    got = rules.due_dates(today - dt.timedelta(days=1), today, DAYS)
    assert got == sorted(today + dt.timedelta(days=w) for w in (60, 30, 7, -1))


def test_due_dates_cover_every_date_a_window_opened_on_during_a_gap() -> None:
    today = dt.date(2026, 5, 10)
    last = today - dt.timedelta(days=5)
    got = set(rules.due_dates(last, today, DAYS))
    for expires in (today + dt.timedelta(days=k) for k in range(-400, 400)):
        opened = any(last < expires - dt.timedelta(days=w) <= today for w in (60, 30, 7, -1))
        assert (expires in got) == opened


def test_first_run_looks_back_as_far_as_the_farthest_window() -> None:
    today = dt.date(2026, 5, 10)
    got = rules.due_dates(None, today, DAYS)
    assert min(got) == today - dt.timedelta(days=61)   # expired up to 61 days ago
    assert max(got) == today + dt.timedelta(days=60)


def test_window_draft_names_the_blockers_of_a_suspended_plate() -> None:
    state = apply(issued(), "plate.suspended", {"reason": "insurance_lapsed"}, T0, "e1")
    draft = rules.window_draft(state, E - dt.timedelta(days=30), DAYS)
    assert draft is not None and draft.kind == "renewal_reminder"
    assert draft.context == {"expires_on": E.isoformat(), "days_before": 30,
                             "blocked_by": ["insurance_lapsed"]}
    assert (draft.expires_on, draft.window_days) == (E, 30)


def test_no_window_draft_for_a_cancelled_plate() -> None:
    state = apply(issued(), "plate.cancelled", {"reason": "surrendered"}, T0, "e1")
    assert rules.window_draft(state, E + dt.timedelta(days=1), DAYS) is None


def test_expired_draft_the_day_after_expiry() -> None:
    assert rules.window_draft(issued(), E, DAYS).kind == "renewal_reminder"
    draft = rules.window_draft(issued(), E + dt.timedelta(days=1), DAYS)
    assert draft.kind == "expired" and draft.window_days == -1


def ev(kind: str, minutes: int, data: dict | None = None, id: str | None = None
       ) -> rules.AppliedEvent:
    return rules.AppliedEvent(id or f"{kind}-{minutes}", kind,
                              T0 + dt.timedelta(minutes=minutes), data or {})


def test_transfer_notifies_the_new_and_the_previous_owner() -> None:
    new_owner = {"owner_id": "o2", "name": "Bo", "language": "fr"}
    events = [ev("plate.transferred", 5, {"owner": new_owner})]
    drafts = rules.event_drafts(issued(), events, {events[0].identity})
    assert [(d.kind, d.owner_id, d.language) for d in drafts] == [
        ("transferred_in", "o2", "fr"), ("transferred_out", "o1", "en")]


def test_events_in_one_batch_each_notify_in_order() -> None:
    events = [ev("plate.suspended", 1, {"reason": "unpaid_fines"}),
              ev("plate.reinstated", 2, {"reason": "unpaid_fines"})]
    drafts = rules.event_drafts(issued(), events, {e.identity for e in events})
    assert [d.kind for d in drafts] == ["suspended", "reinstated"]
    assert drafts[0].context["reason"] == "unpaid_fines"


def test_a_late_event_older_than_the_latest_of_its_kind_does_not_notify() -> None:
    stored = [ev("plate.issued", 0, {"expires_on": E.isoformat(), "owner": OWNER}, id="e0"),
              ev("plate.reinstated", 10)]
    late = ev("plate.suspended", 5, {"reason": "court_order"})
    other_late = ev("plate.stolen_reported", 6, {"agency": "OPP", "report_id": "r"})
    history = sorted([*stored, late, other_late], key=lambda e: e.sort_key)
    fresh = PlateState("CA-ON", "ABC123")
    drafts = rules.event_drafts(fresh, history, {late.identity, other_late.identity})
    assert [d.kind for d in drafts] == ["stolen_reported"]


def test_no_notice_for_a_plate_never_issued() -> None:
    events = [ev("plate.suspended", 1, {"reason": "unpaid_fines"})]
    assert rules.event_drafts(PlateState("CA-ON", "X"), events, {events[0].identity}) == []


def test_channels_default_email_then_sms_then_paper() -> None:
    assert rules.choose_channels({"email": "a@x", "phone": "1"}, None) == ["email", "sms", "paper"]
    assert rules.choose_channels({"phone": "1"}, None) == ["sms", "paper"]
    assert rules.choose_channels({}, None) == ["paper"]
    assert rules.choose_channels({"device_id": "d"}, None) == ["paper", "plate_display"]


def test_channels_follow_preferences_and_skip_unusable_ones() -> None:
    r = {"email": "a@x", "phone": "1", "device_id": "d"}
    assert rules.choose_channels(r, ["sms", "webhook"], None) == ["sms", "email", "paper"]
    assert rules.choose_channels(r, ["webhook"], "https://h") == [
        "webhook", "email", "sms", "paper"]
    assert rules.choose_channels(r, ["paper"]) == ["paper", "email", "sms"]
    assert rules.next_channel(["email", "sms", "paper", "plate_display"], "email") == "sms"
    assert rules.next_channel(["email", "sms", "paper"], "paper") is None


class _Checker(HTMLParser):
    """Well-formedness: every non-void tag closed in order."""

    VOID = {"meta", "br", "img", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag, tag

    def handle_data(self, data: str) -> None:
        self.text.append(data)


KINDS = ["renewal_reminder", "expired", "renewed", "suspended", "reinstated", "stolen_reported",
         "recovered", "transferred_in", "transferred_out", "cancelled"]


@pytest.mark.parametrize("language", ["en", "fr"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_in_both_languages_with_owner_text_escaped(kind: str,
                                                                      language: str) -> None:
    name = "<script>alert('x')</script> & Co"
    ctx = {"expires_on": "2027-03-31", "days_before": 30, "reason": "insurance_lapsed",
           "blocked_by": ["unpaid_fines"], "agency": "OPP"}
    t = render(kind, "CA-ON/ABC123", language, ctx, {"name": name}, "https://o/owner/?token=t")
    assert "<script>" not in t.html and "&lt;script&gt;" in t.html
    checker = _Checker()
    checker.feed(t.html)
    checker.close()
    assert checker.stack == [] and t.html.startswith("<!DOCTYPE html>")
    assert name in "".join(checker.text)              # unescaped back to the owner's text
    assert name in t.text and "https://o/owner/?token=t" in t.text
    assert "ABC123" in t.subject and "ABC123" in t.sms and t.display
    month = "mars" if language == "fr" else "March"
    if kind in ("renewal_reminder", "expired", "renewed", "transferred_in"):
        assert f"31 {month} 2027" in t.text or f"{month} 31, 2027" in t.text


def test_suspension_and_blockers_are_in_plain_words() -> None:
    t = render("renewal_reminder", "CA-ON/A1", "en", {
        "expires_on": "2027-03-31", "days_before": 7,
        "blocked_by": ["insurance_lapsed", "emissions_failed"]}, {"name": "A"})
    assert "blocked" in t.text and "insurance has lapsed" in t.text
    assert "emissions test" in t.text and "insurance_lapsed" not in t.text
    f = render("suspended", "CA-ON/A1", "fr", {"reason": "unpaid_fines"}, {"name": "A"})
    assert "amendes sont impayées" in f.text and "unpaid_fines" not in f.text


def test_webhook_signature_verifies_with_either_secret_and_rejects_stale_t() -> None:
    body = b'{"notice_id":"n"}'
    header = sign(body, ["old", "new"], t=1_700_000_000)
    assert verify(header, body, "old", now=1_700_000_010)
    assert verify(header, body, "new", now=1_700_000_010)
    assert not verify(header, body, "other", now=1_700_000_010)
    assert not verify(header, body + b" ", "new", now=1_700_000_010)
    assert not verify(header, body, "new", now=1_700_000_000 + 301)


def test_retry_after_and_http_classification() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("soon") is None
    assert classify_response(204).outcome == "sent"
    r429 = classify_response(429, "3")
    assert (r429.outcome, r429.retry_after) == ("retry", 3.0)
    assert classify_response(503).outcome == "retry"
    assert classify_response(400).outcome == "failed"
    assert classify_response(404).outcome == "failed"
    assert classify_response(302).outcome == "failed"          # redirects are not followed


def test_backoff_grows_with_jitter_and_attempts_run_out() -> None:
    s = load_settings(notice_retry_initial_seconds=1, notice_retry_max_seconds=100,
                      notice_max_attempts=3)
    waits = [backoff(s, n) for n in (1, 2, 3, 4)]
    assert 1 <= waits[0] <= 2 and 2 <= waits[1] <= 3 and 4 <= waits[2] <= 5
    assert decide(Result("retry", 503), 1, s)[0] == "retry"
    assert decide(Result("retry", 429, retry_after=50), 1, s) == ("retry", 50)
    assert decide(Result("retry", 503), 3, s) == ("failed", None)
    assert decide(Result("failed", 400), 1, s) == ("failed", None)
