"""The Prometheus configuration and alert rules of deploy/prometheus, checked by promtool:
config and rules valid, every alert's firing and quiet cases pass (`promtool test rules`),
and every alert has a test of each kind and a runbook section in docs/operations.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.yml"))


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def alerts() -> dict[str, dict]:
    out = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    out[rule["alert"]] = rule
    return out


def test_config_is_valid(promtool: str) -> None:
    res = _promtool(promtool, "check", "config", str(PROM / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_rules_are_valid(promtool: str) -> None:
    assert RULE_FILES
    res = _promtool(promtool, "check", "rules", *map(str, RULE_FILES))
    assert res.returncode == 0, res.stdout + res.stderr
    count = sum(len(group["rules"]) for path in RULE_FILES
                for group in yaml.safe_load(path.read_text())["groups"])
    assert f"SUCCESS: {count} rules found" in res.stdout


def test_rule_unit_tests_pass(promtool: str) -> None:
    assert TEST_FILES
    res = _promtool(promtool, "test", "rules", *map(str, TEST_FILES))
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_broken_rule_fails_its_unit_test(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: with the DLQ threshold raised, its firing case does."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    for path in RULE_FILES:
        text = path.read_text()
        changed = text.replace("sum(rate(platereg_dlq_total[5m])) > 0.1",
                               "sum(rate(platereg_dlq_total[5m])) > 10")
        assert path.name != "platereg.yml" or changed != text
        (tmp_path / "rules" / path.name).write_text(changed)
    for path in TEST_FILES:
        (tmp_path / "tests" / path.name).write_text(path.read_text())
    res = _promtool(promtool, "test", "rules", *map(str, (tmp_path / "tests").glob("*.yml")))
    assert res.returncode != 0
    assert "PlateregDLQRateHigh" in res.stdout + res.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = set(alerts())
    assert names - firing == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a quiet case"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def test_every_alert_has_a_severity_summary_and_a_runbook_section() -> None:
    anchors = _anchors((ROOT / "docs" / "operations.md").read_text())
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name
        runbook = rule["annotations"]["runbook"]
        page, _, anchor = runbook.partition("#")
        assert page == "docs/operations.md", name
        assert anchor in anchors, f"{name}: docs/operations.md has no section #{anchor}"
