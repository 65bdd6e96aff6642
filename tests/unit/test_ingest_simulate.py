"""The traffic simulator: determinism, validity against the schemas, shares, realism."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from devtools import simulate as sim
from schemas.policy import DEFAULT_POLICY, compile_policy
from schemas.validation import Rejection, parse_event_bytes

NOW = datetime.now(UTC)


def items(**kwargs) -> list[sim.Item]:
    return list(sim.generate(sim.SimConfig(**kwargs)))


@pytest.fixture(scope="module")
def year() -> list[sim.Item]:
    """A year of 1,500 plates with every kind of noise."""
    return items(plates=1500, seed=42, late_share=0.05, duplicate_share=0.04, invalid_share=0.06)


def test_same_seed_same_stream_different_seed_different() -> None:
    a = items(plates=200, seed=7, invalid_share=0.1, duplicate_share=0.1, late_share=0.1)
    b = items(plates=200, seed=7, invalid_share=0.1, duplicate_share=0.1, late_share=0.1)
    c = items(plates=200, seed=8, invalid_share=0.1, duplicate_share=0.1, late_share=0.1)
    assert [i.value for i in a] == [i.value for i in b]
    assert a == b
    assert [i.value for i in a] != [i.value for i in c]
    assert len({i.value for i in a} & {i.value for i in c}) == 0


def test_times_come_from_start_not_the_clock() -> None:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    stream = items(plates=50, seed=1, start=start, duration=timedelta(days=30))
    times = [datetime.fromisoformat(orjson.loads(i.value)["time"]) for i in stream]
    assert times and all(start <= t < start + timedelta(days=30) for t in times)
    assert times == sorted(times)                      # no late share: time order


def test_every_valid_event_validates_and_invalid_ones_fail_as_labelled(year) -> None:
    seen_ids: dict[tuple[str, str], str] = {}
    policy = compile_policy(DEFAULT_POLICY)
    wrong = []
    for item in year:
        if item.reason == "unauthorized_source":            # valid, but not from there
            event = parse_event_bytes(item.value, now=NOW)
            if policy.allows_event(event.source, event.type, orjson.loads(item.value)["data"]):
                wrong.append(("allowed", item.reason))
            continue
        if item.kind == sim.INVALID and item.reason != "id_conflict":
            try:
                parse_event_bytes(item.value, now=NOW)
                wrong.append(("accepted", item.reason))
            except Rejection as exc:
                if exc.reason != item.reason:
                    wrong.append((item.reason, exc.reason, exc.detail))
            continue
        event = parse_event_bytes(item.value, now=NOW)       # raises if invalid
        assert item.key == event.plate_key.encode()
        assert event.type == item.event_type and event.id == item.event_id
        fingerprint = event.fingerprint()
        identity = (event.source, event.id)
        data = orjson.loads(item.value).get("data")
        if not policy.allows_event(event.source, event.type, data):
            wrong.append(("refused by the default policy", event.type, event.source))
        if item.kind == sim.INVALID:               # id_conflict: same (source, id), new content
            assert seen_ids[identity] != fingerprint
        elif item.kind == sim.DUPLICATE:
            assert seen_ids[identity] == fingerprint
        else:
            assert identity not in seen_ids
            seen_ids[identity] = fingerprint
    assert wrong == []


def test_shares_are_roughly_honoured(year) -> None:
    kinds = Counter(i.kind for i in year)
    total = len(year)
    assert total > 2500
    assert 0.045 <= kinds[sim.INVALID] / total <= 0.075
    assert 0.028 <= kinds[sim.DUPLICATE] / total <= 0.052
    valid = [i for i in year if i.kind == sim.VALID]
    late = sum(i.late for i in valid)
    assert 0.035 <= late / len(valid) <= 0.065
    reasons = Counter(i.reason for i in year if i.kind == sim.INVALID)
    assert set(reasons) >= {"malformed_json", "unknown_type", "invalid_plate", "schema_invalid",
                            "future_time", "id_conflict", "unauthorized_source"}


def test_late_events_arrive_out_of_order(year) -> None:
    times = [orjson.loads(i.value)["time"] for i in year if i.kind == sim.VALID]
    late = [orjson.loads(i.value)["time"] for i in year if i.kind == sim.VALID and i.late]
    assert late and times != sorted(times)
    on_time = [orjson.loads(i.value)["time"] for i in year if i.kind == sim.VALID and not i.late]
    assert on_time == sorted(on_time)


def test_registry_life_looks_plausible(year) -> None:
    events = [orjson.loads(i.value) for i in year if i.kind == sim.VALID]
    types = Counter(e["type"] for e in events)
    assert types["plate.issued"] == 1500
    assert {"plate.renewed", "plate.suspended", "plate.reinstated", "plate.stolen_reported",
            "plate.recovered", "plate.transferred", "plate.owner_updated", "plate.cancelled",
            "plate.device_paired"} <= set(types)
    assert types["plate.renewed"] > types["plate.suspended"] > types["plate.stolen_reported"]
    issued = [e for e in events if e["type"] == "plate.issued"]
    languages = Counter(e["data"]["owner"]["language"] for e in issued)
    assert 0.18 <= languages["fr"] / len(issued) <= 0.32
    # First expiries spread over the year after issue.
    months = Counter(e["data"]["expires_on"][5:7] for e in issued)
    assert len(months) == 12 and min(months.values()) > 40
    reasons = Counter(e["data"]["reason"] for e in events if e["type"] == "plate.suspended")
    assert reasons.most_common(1)[0][0] == "insurance_lapsed"
    # Renewals: most before the expiry they extend, some after it (late).
    expiry: dict[str, str] = {}
    before = after = 0
    for e in sorted(events, key=lambda e: e["time"]):
        key = e["subject"].upper().replace(" ", "").replace("-", "")
        if e["type"] == "plate.issued":
            expiry[key] = e["data"]["expires_on"]
        elif e["type"] == "plate.renewed" and key in expiry:
            if e["time"][:10] <= expiry[key]:
                before += 1
            else:
                after += 1
            expiry[key] = e["data"]["expires_on"]
    assert before > 4 * after > 0
    # Personal data is obviously fictional: example.* mail, 555-01xx phones.
    owners = [e["data"]["owner"] for e in issued]
    assert all(o["email"].split("@")[1] in ("example.com", "example.org", "example.net")
               for o in owners if "email" in o)
    assert all(o["phone"].endswith(tuple(f"555-01{n:02d}" for n in range(100)))
               for o in owners if "phone" in o)
    assert len({o["owner_id"] for o in owners}) == len(owners)
    vins = [e["data"]["vehicle"]["vin"] for e in issued]
    assert all(len(v) == 17 and not set(v) & set("IOQ") for v in vins)
    plates = {e["subject"].upper().replace(" ", "").replace("-", "") for e in issued}
    assert len(plates) == len(issued)                    # every plate is issued once


def test_events_cap_and_config_errors() -> None:
    assert len(items(plates=300, seed=1, events=123)) == 123
    assert items(plates=10, seed=1, events=0) == []
    with pytest.raises(ValueError):
        sim.SimConfig(plates=0)
    with pytest.raises(ValueError):
        sim.SimConfig(invalid_share=1.5)
    with pytest.raises(ValueError):
        sim.SimConfig(invalid_share=0.6, duplicate_share=0.6)
    with pytest.raises(ValueError):
        sim.SimConfig(invalid_share=1.0)                  # never-ending without --events
    with pytest.raises(ValueError):
        sim.SimConfig(start=datetime(2025, 1, 1))         # naive
    assert len(items(plates=5, seed=1, invalid_share=1.0, events=20)) == 20


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("12h", 43200),
                                          ("365d", 365 * 86400), ("2w", 14 * 86400),
                                          ("1.5h", 5400)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert sim.parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "10", "d", "-5d", "5y", "1e9d", "5 days"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        sim.parse_duration(text)


def test_light_random_is_deterministic_and_uniform_enough() -> None:
    a, b = sim.LightRandom("x"), sim.LightRandom("x")
    assert [a.random() for _ in range(5)] == [b.random() for _ in range(5)]
    rng = sim.LightRandom("y")
    values = [rng.random() for _ in range(20000)]
    assert 0 <= min(values) and max(values) < 1
    assert 0.48 < sum(values) / len(values) < 0.52
    counts = Counter(rng.randint(1, 4) for _ in range(20000))
    assert set(counts) == {1, 2, 3, 4} and min(counts.values()) > 4500
    assert rng.getrandbits(128) < 2**128 and rng.getrandbits(5) < 32


async def test_file_sink_writes_one_line_per_item(tmp_path) -> None:
    stream = items(plates=20, seed=3, invalid_share=0.2, events=60)
    sink = sim.FileSink(tmp_path / "out.ndjson")
    stats = await sim.run(iter(stream), sink)
    lines = (tmp_path / "out.ndjson").read_bytes().splitlines()
    assert lines == [i.value for i in stream] and stats.sent == 60
    assert stats.by_kind == dict(Counter(i.kind for i in stream))
