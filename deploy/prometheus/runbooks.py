"""Set (or check) the base URL of the alerts' runbook links.

Each alert of deploy/prometheus/rules/*.yml has the annotation

    runbook_url: <BASE>#<the alert's name in lower case>

where BASE is the runbook page: docs/operations.md of the public repository, with one
``### <AlertName>`` heading per alert (DEFAULT_BASE below). The promtool unit tests in
deploy/prometheus/tests/*.yml expect the same annotations. An operator whose runbook
lives elsewhere (an internal wiki, a mirror of the repository) rewrites every link, in
the rule files and their tests, in place, comments and layout kept:

    python3 deploy/prometheus/runbooks.py --base https://wiki.example.org/platereg/runbook

and checks a copy of the rule files that was rewritten by other means (sed, templating):

    python3 deploy/prometheus/runbooks.py --check --base URL path/to/rules/*.yml

Only ``runbook_url:`` lines change; the anchor after ``#`` is kept. With ``--check``
nothing is written: exit 1 and one line per alert whose link is not BASE#anchor (or
that has none). Needs nothing but the Python standard library.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_BASE = "https://github.com/plate-registry/plate-registry/blob/main/docs/operations.md"
HERE = Path(__file__).resolve().parent
DEFAULT_FILES = (*sorted((HERE / "rules").glob("*.yml")), *sorted((HERE / "tests").glob("*.yml")))

_LINK = re.compile(r"^(?P<lead>\s*runbook_url:\s*)(?P<q>['\"]?)(?P<url>[^'\"#\s]*)"
                   r"#(?P<anchor>[A-Za-z0-9_-]+)(?P=q)\s*$")
#: An alert rule (``- alert: X``) or a promtool case about one (``alertname: X``).
_ALERT = re.compile(r"^\s*(?:-\s+)?(?:alert|alertname):\s*['\"]?(?P<name>[A-Za-z0-9_]+)")


def valid_base(base: str) -> str:
    """``base`` if it is an absolute http(s) URL without a fragment, else ValueError."""
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment \
            or "#" in base or any(c.isspace() for c in base):
        raise ValueError(f"not an absolute http(s) URL without '#': {base!r}")
    return base


def rebase(text: str, base: str) -> str:
    """``text`` (a rule or rule-test file) with every runbook_url pointing at ``base``."""
    valid_base(base)
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        match = _LINK.match(line.rstrip("\n"))
        if match:
            end = line[len(line.rstrip("\n")):]
            lines[i] = f"{match['lead']}{base}#{match['anchor']}{end}"
    return "".join(lines)


def problems(text: str, base: str) -> list[str]:
    """What is wrong with the runbook links of a rule file: each alert (``- alert: X``)
    needs ``runbook_url: BASE#x``; in a test file each expected link must be that too."""
    out: list[str] = []
    alert, linked = None, set()
    alerts = []
    for line in text.splitlines():
        named = _ALERT.match(line)
        if named:
            alert = named["name"]
            if "alertname" not in line:
                alerts.append(alert)
        if "runbook_url:" in line:
            match = _LINK.match(line)
            want = f"{base}#{(alert or '').lower()}"
            got = f"{match['url']}#{match['anchor']}" if match else line.strip()
            if got != want:
                out.append(f"{alert}: runbook_url {got} (want {want})")
            linked.add(alert)
        if line.lstrip().startswith("runbook:"):
            out.append(f"{alert}: relative 'runbook:' annotation (use runbook_url)")
    out += [f"{name}: no runbook_url" for name in alerts if name not in linked]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=DEFAULT_BASE,
                        help=f"the runbook page's URL (default {DEFAULT_BASE})")
    parser.add_argument("--check", action="store_true", help="only check, exit 1 if wrong")
    parser.add_argument("files", nargs="*", type=Path, help="default: rules/ and tests/")
    args = parser.parse_args(argv)
    try:
        base = valid_base(args.base)
    except ValueError as exc:
        parser.error(str(exc))
    bad = 0
    for path in args.files or DEFAULT_FILES:
        text = path.read_text(encoding="utf-8")
        if args.check:
            for problem in problems(text, base):
                print(f"{path}: {problem}", file=sys.stderr)
                bad += 1
        elif (new := rebase(text, base)) != text:
            path.write_text(new, encoding="utf-8")
            print(f"rewrote {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
