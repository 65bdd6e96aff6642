"""The output of the list commands (platereg.listing): JSON for scripts, whole values through
a pipe, whole ids in a terminal of any width."""

from __future__ import annotations

import datetime as dt
import io
import json
import re

import pytest

from platereg.listing import Field, emit, json_document, tsv_lines

FIELDS = (Field("key_id", identifier=True), Field("name"), Field("sources"),
          Field("rate_limit", text=lambda v: "default" if v is None else str(v)),
          Field("created_at", "created"))
KEY_ID = "k3yw1thn0br3ak"
ROWS = [{"key_id": KEY_ID, "name": "the night desk of the registry office, second floor",
         "sources": ("/insurance/acme/", "/fines/acme/"), "rate_limit": None,
         "created_at": dt.datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=dt.UTC)},
        {"key_id": "short", "name": "tab\there\nand a line", "sources": (), "rate_limit": 7.5,
         "created_at": dt.datetime(2026, 1, 3, tzinfo=dt.UTC)}]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True

    def screen(self) -> list[str]:
        """What was written, without the colour and style sequences."""
        return re.sub(r"\x1b\[[0-9;]*m", "", self.getvalue()).splitlines()


def test_json_is_one_array_of_objects_with_the_fields_names_and_raw_values() -> None:
    doc = json.loads(json_document(FIELDS, ROWS))
    assert doc[0] == {"key_id": KEY_ID, "name": ROWS[0]["name"],
                      "sources": ["/insurance/acme/", "/fines/acme/"], "rate_limit": None,
                      "created_at": "2026-01-02T03:04:05.000678+00:00"}
    assert doc[1]["rate_limit"] == 7.5 and doc[1]["name"] == "tab\there\nand a line"


def test_tsv_keeps_every_value_whole_and_escapes_tabs_and_newlines() -> None:
    header, first, second = tsv_lines(FIELDS, ROWS)
    assert header == "key id\tname\tsources\trate limit\tcreated"
    assert first.split("\t") == [KEY_ID, ROWS[0]["name"], "/insurance/acme/ /fines/acme/",
                                 "default", "2026-01-02T03:04:05+00:00"]
    assert second.split("\t")[1] == "tab\\there\\nand a line"


def test_emit_through_a_pipe_writes_tsv_and_the_count_to_stderr(
        capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    emit(FIELDS, ROWS, out=out, noun="key")
    assert out.getvalue().splitlines() == tsv_lines(FIELDS, ROWS)
    assert capsys.readouterr().err == "2 key(s)\n"


def test_emit_json_writes_the_document_only(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    emit(FIELDS, ROWS, as_json=True, out=out)
    assert json.loads(out.getvalue())[0]["key_id"] == KEY_ID
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("columns", [80, 50, 24])
def test_in_a_terminal_the_id_is_whole_at_any_width(monkeypatch: pytest.MonkeyPatch,
                                                    columns: int) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    rows = [{**ROWS[0], "key_id": KEY_ID * 2}]       # 28 characters
    out = Terminal()
    emit(FIELDS, rows, out=out)
    lines = out.screen()
    assert any(KEY_ID * 2 in line for line in lines), "\n".join(lines)
    if columns == 80:
        assert "│" in lines[-2] and all(len(line) <= columns for line in lines)
        assert not any("…" in line for line in lines)   # nothing elided: long names fold
    else:                                               # too narrow for a table
        assert f"key id:     {KEY_ID * 2}" in lines


def test_markup_in_a_value_is_shown_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    out = Terminal()
    emit(FIELDS, [{**ROWS[0], "name": "[bold]x[/bold]"}], out=out)
    assert any("[bold]x[/bold]" in line for line in out.screen())
