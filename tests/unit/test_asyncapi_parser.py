"""The AsyncAPI document loads in the AsyncAPI tools: the official parser
(``@asyncapi/parser`` from npm, a pinned version, installed into a cache directory outside
the repository when missing) reports no error, and what it resolves of each payload is
what the models say (every event type's ``data`` fields, the dead letters' headers).
Without Node.js or npm the test installs Debian's (as root) or skips; under CI=true it
fails instead."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from schemas import export, topics
from schemas.events import DATA_TYPES
from schemas.notices import Notice
from schemas.views import EnforcementView

PARSER = "@asyncapi/parser"
PARSER_VERSION = "3.6.6"
CACHE = Path(os.environ.get("PLATEREG_ASYNCAPI_PARSER_DIR", Path.home() / ".cache" / "platereg"
                            / f"asyncapi-parser-{PARSER_VERSION}"))
SCRIPT = Path(__file__).with_name("asyncapi_parse.mjs")
ERROR = 0   # the parser's severities: 0 error, 1 warning, 2 information, 3 hint


@pytest.fixture(scope="module")
def parser_dir(npm: str) -> Path:
    """The parser, installed with npm into CACHE unless it is there (no install scripts)."""
    if not (CACHE / "node_modules" / PARSER / "package.json").exists():
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--prefix",
             str(CACHE), f"{PARSER}@{PARSER_VERSION}"],
            capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            message = f"npm could not install {PARSER}@{PARSER_VERSION}:\n{done.stderr[-2000:]}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
    installed = json.loads((CACHE / "node_modules" / PARSER / "package.json").read_text())
    assert installed["version"] == PARSER_VERSION
    return CACHE


def parse(parser_dir: Path, document: Path) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node comes with Debian's npm"
    done = subprocess.run([node, str(SCRIPT), str(document)], capture_output=True, text=True,
                          timeout=120, check=False,
                          env={**os.environ, "PARSER_DIR": str(parser_dir)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def errors(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in result["diagnostics"] if d["severity"] == ERROR]


def test_the_official_parser_finds_no_error_and_resolves_every_payload(
        parser_dir: Path, tmp_path: Path) -> None:
    document = tmp_path / export.ASYNCAPI_FILE
    document.write_text(export.export_all()[export.ASYNCAPI_FILE], encoding="utf-8")
    result = parse(parser_dir, document)
    assert errors(result) == []
    messages = result["messages"]
    assert {m["type"]: m["data"] for m in messages["PlateEvent"]["union"]} == {
        str(t): sorted(data.__annotations__) for t, data in DATA_TYPES.items()}
    assert messages["PlateStatus"]["fields"] == sorted(EnforcementView.model_fields)
    assert messages["Notice"]["fields"] == sorted(Notice.model_fields)
    assert messages["DeadLetter"]["headers"] == sorted(topics.DLQ_HEADERS)


def test_the_parser_reports_a_reference_that_does_not_resolve(parser_dir: Path,
                                                              tmp_path: Path) -> None:
    """The check can fail: a payload pointing at the root's $defs (as the schemas' own
    files do) is an invalid-ref error."""
    text = export.export_all()[export.ASYNCAPI_FILE]
    broken = text.replace("'#/components/schemas/Owner'", "'#/$defs/Owner'", 1)
    assert broken != text
    document = tmp_path / "broken.yaml"
    document.write_text(broken, encoding="utf-8")
    assert [e["code"] for e in errors(parse(parser_dir, document))] == ["invalid-ref"]
