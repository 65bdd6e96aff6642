"""The output of every ``platereg ... list`` command, for people and for scripts.

A list command describes its columns once (:class:`Field`) and hands its rows (mappings
of field name to value) to :func:`emit`, which writes one of three forms:

* ``--json`` (:data:`JsonOption`): one JSON document, an array of objects keyed by the
  fields' names (stable: scripts rely on them), values as they are (numbers, lists,
  ``null``, times in RFC 3339).
* stdout not a terminal (a pipe, a file, CI): tab-separated lines, a header line first,
  each value whole (a tab, newline or backslash inside a value is written ``\\t``,
  ``\\n``, ``\\\\``), so ``grep``, ``cut -f`` and ``awk -F'\\t'`` see every value entire.
* a terminal: a rich table. Id columns (``Field(identifier=True)``) never wrap and are as
  wide as their longest value, other columns wrap (fold) rather than cut; a terminal
  too narrow for the ids shows one ``field: value`` block per row instead.

The summary line (``12 key(s)``) goes to stderr, so it never mixes with the rows.
A new list command: declare its fields, add ``as_json: JsonOption = False`` to its
options and end with ``emit(FIELDS, rows, as_json=as_json, noun="...")``.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TextIO

import orjson
import typer

#: The ``--json`` option of a list command.
JsonOption = Annotated[bool, typer.Option(
    "--json", help="Print one JSON document (an array of objects) instead of a table")]


def cell_text(value: Any) -> str:
    """How a value reads in a table or a TSV line: times to the second, lists
    space-separated, None empty."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple | set | frozenset):
        return " ".join(cell_text(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class Field:
    """One column: ``name`` is its JSON key; ``header`` its table and TSV heading
    (default: the name with spaces); ``text`` how a value reads in the table and TSV;
    ``identifier``: never cut (ids a later command takes: ``keys revoke ID``)."""

    name: str
    header: str = ""
    text: Callable[[Any], str] = cell_text
    identifier: bool = False

    @property
    def heading(self) -> str:
        return self.header or self.name.replace("_", " ")


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def json_document(fields: Sequence[Field], rows: Iterable[Mapping[str, Any]]) -> bytes:
    """The rows as one JSON array of objects holding exactly ``fields``."""
    records = [{f.name: row.get(f.name) for f in fields} for row in rows]
    return orjson.dumps(records, default=_json_default,
                        option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def tsv_lines(fields: Sequence[Field], rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """A header line, then one line per row: each value whole, tab-separated."""
    lines = ["\t".join(f.heading for f in fields)]
    for row in rows:
        lines.append("\t".join(f.text(row.get(f.name)).translate(_TSV_ESCAPES)
                               for f in fields))
    return lines


def table(fields: Sequence[Field], rows: Sequence[Mapping[str, Any]]) -> Any:
    """A rich table: id columns unwrapped at their full width, the others folding."""
    from rich.table import Table
    from rich.text import Text

    grid = Table()
    for f in fields:
        if f.identifier:
            widest = max([len(f.heading), *(len(f.text(r.get(f.name))) for r in rows)])
            grid.add_column(f.heading, no_wrap=True, min_width=widest, overflow="fold")
        else:
            grid.add_column(f.heading, overflow="fold")
    for row in rows:
        grid.add_row(*(Text(f.text(row.get(f.name))) for f in fields))   # no markup
    return grid


#: The narrowest a folding column may be before a table gives way to records.
NARROWEST = 6


def _table_width(fields: Sequence[Field], rows: Sequence[Mapping[str, Any]]) -> int:
    """The narrowest :func:`table` that shows every id whole and folds the other columns
    at :data:`NARROWEST` (a cell's padding: 2, a border: 1)."""
    width = 1
    for f in fields:
        if f.identifier:
            width += max([len(f.heading), *(len(f.text(r.get(f.name))) for r in rows)]) + 3
        else:
            width += NARROWEST + 3
    return width


def records(fields: Sequence[Field], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One ``heading: value`` block per row (for terminals narrower than the ids)."""
    width = max(len(f.heading) for f in fields)
    out: list[str] = []
    for row in rows:
        out.extend(f"{f.heading + ':':<{width + 1}} {f.text(row.get(f.name))}" for f in fields)
        out.append("")
    return out


def emit(fields: Sequence[Field], rows: Iterable[Mapping[str, Any]], *, as_json: bool = False,
         noun: str = "row", out: TextIO | None = None) -> None:
    """Write ``rows`` as JSON, TSV or a table (see the module doc); ``N noun(s)`` to
    stderr for people (not with ``--json``)."""
    out = out or sys.stdout
    rows = list(rows)
    if as_json:
        out.write(json_document(fields, rows).decode())
        out.flush()
        return
    if not out.isatty():
        out.write("".join(f"{line}\n" for line in tsv_lines(fields, rows)))
    else:
        _print_for_a_terminal(fields, rows, out)
    out.flush()
    typer.echo(f"{len(rows)} {noun}(s)", err=True)


def _print_for_a_terminal(fields: Sequence[Field], rows: Sequence[Mapping[str, Any]],
                          out: TextIO) -> None:
    from rich.console import Console

    console = Console(file=out)
    if _table_width(fields, rows) <= console.width:
        console.print(table(fields, rows))
    else:
        console.print("\n".join(records(fields, rows)), markup=False, highlight=False,
                      crop=False, soft_wrap=True)
