"""`platereg import` and `platereg simulate` as real processes against the real broker."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest

from devtools import simulate as sim
from tests.integration.cli_support import PLATEREG
from tests.integration.ingest_support import header, issued, renewed
from tests.integration.kafka_support import read_topic

pytestmark = pytest.mark.integration



def platereg(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([PLATEREG, *args], capture_output=True, text=True, timeout=timeout,
                          env=os.environ.copy())


def report_of(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_ndjson_with_good_and_bad_lines(topics, tmp_path) -> None:
    good = [issued(f"CA-ON/IMP{i}") for i in range(6)] + [renewed("ca-qc/abc 123")]
    lines = [
        orjson.dumps(good[0]),                                   # 1
        b"",                                                     # 2 blank
        orjson.dumps(good[1]) + b"\r",                           # 3 CRLF
        b"{not json",                                            # 4
        orjson.dumps({**good[2], "subject": "CA-ON/SECRET#1"}),  # 5 invalid plate
        orjson.dumps(good[3]),                                   # 6
        b"   ",                                                  # 7 blank
        orjson.dumps({**good[4], "note": "x" * 70_000}),         # 8 too large
        orjson.dumps({**good[5], "type": "plate.repainted"}),    # 9 unknown type
        orjson.dumps(good[6]),                                   # 10
        b"[1, 2]",                                               # 11 not an object
        b"\xff\xfe garbage",                                     # 12 not UTF-8
        orjson.dumps(good[4]),                                   # 13 (no newline at the end)
    ]
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(lines))
    result = platereg("import", str(path))
    assert result.returncode == 1, result.stderr
    assert "13 lines read, 5 events published to Kafka, 6 rejected, 2 blank" in result.stdout
    assert "unknown_type 1" in result.stdout and "malformed_json 3" in result.stdout

    report = report_of(tmp_path / "events.ndjson.rejected.ndjson")
    assert [(r["line"], r["reason"]) for r in report] == [
        (4, "malformed_json"), (5, "invalid_plate"), (8, "too_large"), (9, "unknown_type"),
        (11, "malformed_json"), (12, "malformed_json")]
    assert report[1]["raw"] == lines[4].decode()       # the line, to fix and re-import
    assert "SECRET" not in report[1]["detail"]
    assert oct((tmp_path / "events.ndjson.rejected.ndjson").stat().st_mode & 0o777) == "0o600"

    records = await read_topic(topics)
    expected_ids = [good[0]["id"], good[1]["id"], good[3]["id"], good[6]["id"], good[4]["id"]]
    assert sorted(orjson.loads(r.value)["id"] for r in records) == sorted(expected_ids)
    keys = {orjson.loads(r.value)["id"]: r.key for r in records}
    assert keys[good[6]["id"]] == b"CA-QC/ABC123"
    assert all(header(r, "content-type") == b"application/cloudevents+json" for r in records)
    assert "SECRET" not in result.stdout + result.stderr

    # Re-running the file publishes the same events again (same ids): harmless downstream.
    again = platereg("import", str(path), "--report", str(tmp_path / "second.ndjson"))
    assert again.returncode == 1
    assert len(report_of(tmp_path / "second.ndjson")) == 6
    assert len(await read_topic(topics)) == 10


async def test_csv_variants(topics, tmp_path) -> None:
    a, b, c = issued("CA-ON/CSV1"), renewed("CA-ON/CSV1"), issued("CA-QC/CSV2")
    data_json = orjson.dumps(a["data"]).decode().replace('"', '""')
    rows = [
        "\ufeffID,Source,Type,Time,Jurisdiction,Plate,data,data.expires_on",
        f'{a["id"]},{a["source"]},{a["type"]},{a["time"]},ca-on,csv 1,"{data_json}",',
        f'{b["id"]},{b["source"]},{b["type"]},{b["time"]},CA-ON,CSV1,,2028-11-30',
        'bad-quote,/x,plate.renewed,2026-01-01T00:00:00Z,CA-ON,"CSV"3,,2028-01-01',
        "too,few,cells",
        f'{c["id"]}-x,/x,plate.renewed,2026-01-01T00:00:00Z,CA-ON,CSV4,"{{""a"": 1",',
        f'{c["id"]}-y,/x,plate.renewed,2026-01-01T00:00:00Z,CA-ON,CSV\xe95,,2028-01-01',
        ",,,,,,,",
        f'{c["id"]}-z,/x,plate.renewed,2026-01-01T00:00:00Z,CA-ON,,,2028-01-01',
    ]
    path = tmp_path / "legacy.csv"
    body = "\r\n".join(rows).encode("utf-8")
    # An invalid UTF-8 byte in one row only.
    body += b"\r\nid-latin1,/x,plate.renewed,2026-01-01T00:00:00Z,CA-ON,CSV\xe96,,2028-01-01\r\n"
    path.write_bytes(body)
    result = platereg("import", str(path))
    assert result.returncode == 1, result.stderr
    report = report_of(tmp_path / "legacy.csv.rejected.ndjson")
    assert [(r["line"], r["reason"]) for r in report] == [
        (4, "malformed_csv"), (5, "malformed_csv"), (6, "malformed_json"), (7, "invalid_plate"),
        (9, "invalid_plate"), (10, "malformed_csv")]
    assert "2 events published" in result.stdout and "1 blank" in result.stdout

    # Flattened data columns only, with the integer year.
    flat = tmp_path / "flat.csv"
    flat.write_text(
        "id,source,type,time,subject,data.plate_class,data.expires_on,data.vehicle.vin,"
        "data.vehicle.make,data.vehicle.model,data.vehicle.year,data.vehicle.colour,"
        "data.owner.owner_id,data.owner.name,data.owner.language\n"
        f'{c["id"]},/saaq/centre/001,plate.issued,2026-01-05T15:04:05Z,CA-QC/CSV2,passenger,'
        '2027-06-30,2HGFC2F59JH123456,Honda,Civic,2019,blue,own-9,"Côté, Geneviève",fr\n'
        'y-1,/x,plate.issued,2026-01-05T15:04:05Z,CA-QC/CSV3,passenger,2027-06-30,VIN1,'
        'Honda,Civic,twenty,blue,own-9,Name,fr\n', encoding="utf-8")
    result = platereg("import", str(flat))
    assert result.returncode == 1, result.stdout + result.stderr
    assert [r["detail"] for r in report_of(tmp_path / "flat.csv.rejected.ndjson")] == [
        "data.vehicle.year: must be an integer"]

    records = await read_topic(topics)
    values = {orjson.loads(r.value)["id"]: orjson.loads(r.value) for r in records}
    assert set(values) == {a["id"], b["id"], c["id"]}
    assert values[a["id"]]["subject"] == "CA-ON/CSV1" and values[a["id"]]["data"] == a["data"]
    assert values[b["id"]]["data"] == {"expires_on": "2028-11-30"}
    assert values[c["id"]]["data"]["owner"]["name"] == "Côté, Geneviève"
    assert values[c["id"]]["data"]["vehicle"]["year"] == 2019

    # Unknown columns stop the import before anything is published.
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("id,source,type,time,subject,colour\n1,/x,plate.renewed,"
                       "2026-01-01T00:00:00Z,CA-ON/A1,red\n")
    result = platereg("import", str(unknown))
    assert result.returncode == 2 and "unknown CSV column" in result.stderr
    missing = tmp_path / "missing.csv"
    missing.write_text("id,type,time\n")
    result = platereg("import", str(missing))
    assert result.returncode == 2 and "lacks" in result.stderr
    assert len(await read_topic(topics)) == 3


def test_usage_errors(settings, tmp_path) -> None:
    result = platereg("import", str(tmp_path / "nope.ndjson"))
    assert result.returncode == 2 and "no such file" in result.stderr
    (tmp_path / "x.ndjson").write_text("{}\n")
    result = platereg("import", str(tmp_path / "x.ndjson"), "--format", "xml")
    assert result.returncode == 2
    result = platereg("import", str(tmp_path / "x.ndjson"), "--api", "http://127.0.0.1:9")
    assert result.returncode == 2 and "--key" in result.stderr


def test_unreachable_broker_exits_3(settings, tmp_path, monkeypatch) -> None:
    from devtools.embedded import free_port

    monkeypatch.setenv("PLATEREG_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("PLATEREG_KAFKA_TIMEOUT_SECONDS", "1")
    path = tmp_path / "a.ndjson"
    path.write_bytes(orjson.dumps(issued()) + b"\n")
    result = platereg("import", str(path))
    assert result.returncode == 3
    assert "Run the same command again" in result.stderr


async def test_a_large_file_is_imported_line_for_line(topics, tmp_path) -> None:
    """20,000 lines of ~1 KB through the real `platereg` script; every one published.
    (Memory is the import benchmark's figure: bench/bench_ingest.py reports peak RSS.)"""
    path = tmp_path / "large.ndjson"
    template = issued("CA-ON/ZZZ0", id="ID-PLACEHOLDER")
    template["note"] = "n" * 700                          # ~1 KB per line
    text = orjson.dumps(template)
    count = 20_000
    with open(path, "wb") as fh:
        for i in range(count):
            fh.write(text.replace(b"ID-PLACEHOLDER", b"large-%d" % i)
                     .replace(b"CA-ON/ZZZ0", b"CA-ON/L%d" % i) + b"\n")
    result = subprocess.run([PLATEREG, "import", "--no-progress", str(path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{count:,} lines read, {count:,} events published to Kafka, 0 rejected" \
        in result.stdout
    ids = {orjson.loads(r.value)["id"] for r in await read_topic(topics, timeout=120)}
    assert ids == {f"large-{i}" for i in range(count)}


async def test_simulate_to_kafka_and_file(topics, tmp_path) -> None:
    args = ("simulate", "--plates", "150", "--events", "250", "--seed", "5",
            "--invalid-share", "0.05", "--duplicate-share", "0.05", "--late-share", "0.1")
    result = platereg(*args, "--to", "kafka")
    assert result.returncode == 0, result.stderr
    assert "simulated 250 messages" in result.stdout
    out1, out2 = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    assert platereg(*args, "--to", "file", "--output", str(out1)).returncode == 0
    assert platereg(*args, "--to", "file", "--output", str(out2)).returncode == 0
    assert out1.read_bytes() == out2.read_bytes()
    records = await read_topic(topics)
    assert sorted(r.value for r in records) == sorted(out1.read_bytes().splitlines())
    items = list(sim.generate(sim.SimConfig(plates=150, events=250, seed=5, invalid_share=0.05,
                                            duplicate_share=0.05, late_share=0.1)))
    assert [i.value for i in items] == out1.read_bytes().splitlines()
    by_value = {i.value: i.key for i in items}
    assert all(r.key == by_value[r.value] for r in records)

    # The same file imported: invalid lines are reported, id conflicts are the registry's job.
    result = platereg("import", str(out1))
    invalid = sum(i.kind == "invalid" and i.reason != "id_conflict" for i in items)
    assert result.returncode == (1 if invalid else 0)
    assert f"{invalid:,} rejected" in result.stdout


def test_simulate_refuses_a_window_in_the_future(settings) -> None:
    result = platereg("simulate", "--to", "file", "--start", "2099-01-01T00:00:00Z")
    assert result.returncode == 2 and "future" in result.stderr
    result = platereg("simulate", "--to", "file", "--duration", "forever")
    assert result.returncode == 2
    result = platereg("simulate", "--to", "file", "--invalid-share", "2")
    assert result.returncode == 2
