"""The Prometheus configuration and alert rules of deploy/prometheus, checked by promtool:
config and rules valid, every alert's firing and quiet cases pass (`promtool test rules`),
every alert has a test of each kind, a summary, a description and an absolute runbook_url
(its section of docs/operations.md), and deploy/prometheus/runbooks.py moves every link to
another runbook base with the promtool tests still passing."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.yml"))
RUNBOOK_PAGE = ROOT / "docs" / "operations.md"


def _runbooks():
    spec = importlib.util.spec_from_file_location("runbooks", PROM / "runbooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runbooks = _runbooks()


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


def test_every_alert_has_a_severity_summary_description_and_absolute_runbook_url() -> None:
    assert runbooks.DEFAULT_BASE.startswith("https://")
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["summary"] and len(annotations["description"]) > 60, name
        assert annotations["runbook_url"] == f"{runbooks.DEFAULT_BASE}#{name.lower()}", name
    assert runbooks.main(["--check"]) == 0


def test_the_runbook_page_has_a_section_per_alert() -> None:
    """docs/operations.md has a ``### <AlertName>`` heading per alert (GitHub's anchor of
    it is the name in lower case, what runbook_url points at)."""
    headings = set(re.findall(r"^### +(\S+) *$", RUNBOOK_PAGE.read_text(), re.MULTILINE))
    assert set(alerts()) - headings == set(), "alerts without a section in docs/operations.md"


def _copy_rules(tmp_path: Path) -> list[Path]:
    for sub in ("rules", "tests"):
        (tmp_path / sub).mkdir()
        for path in (PROM / sub).glob("*.yml"):
            (tmp_path / sub / path.name).write_text(path.read_text())
    return sorted(tmp_path.glob("*/*.yml"))


def test_an_operator_moves_every_runbook_link_to_another_base(promtool: str,
                                                              tmp_path: Path) -> None:
    """What an operator runs: the script rewrites the rules and their promtool tests in
    place; the links use the new base with each alert's anchor, comments stay, and the
    promtool tests still pass."""
    files = _copy_rules(tmp_path)
    base = "https://wiki.example.org/platereg/runbook.html"
    res = subprocess.run([sys.executable, str(PROM / "runbooks.py"), "--base", base,
                          *map(str, files)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    rules = tmp_path / "rules" / "platereg.yml"
    text = rules.read_text()
    assert runbooks.DEFAULT_BASE not in text and text.startswith("# Alert rules")
    for group in yaml.safe_load(text)["groups"]:
        for rule in group["rules"]:
            assert rule["annotations"]["runbook_url"] == f"{base}#{rule['alert'].lower()}"
    assert runbooks.main(["--check", "--base", base, *map(str, files)]) == 0
    assert runbooks.main(["--check", *map(str, files)]) == 1
    res = _promtool(promtool, "test", "rules", *map(str, (tmp_path / "tests").glob("*.yml")))
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_check_names_wrong_and_missing_links(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    files = _copy_rules(tmp_path)
    rules = tmp_path / "rules" / "platereg.yml"
    text = rules.read_text()
    text = text.replace("#plateregdlqratehigh", "#plateregprocessdown")
    text = re.sub(r"\n *runbook_url: .*#plateregprocessmissing", "", text)
    rules.write_text(text)
    assert runbooks.main(["--check", *map(str, files)]) == 1
    err = capsys.readouterr().err
    assert "PlateregDLQRateHigh: runbook_url" in err and "PlateregProcessMissing: no " in err
    with pytest.raises(ValueError):
        runbooks.rebase(text, "docs/operations.md")   # relative: refused
