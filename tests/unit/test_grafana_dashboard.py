"""The Grafana dashboards of deploy/grafana/dashboards import into any Grafana: no
datasource is named (every panel, target and variable uses the ``${datasource}``
variable, of type prometheus), ``__inputs``/``__requires`` are there for the import
screen, and every PromQL selector is narrowed to the ``$job`` and ``$instance`` variables,
so the panels show the chosen processes of a Prometheus that scrapes other things too.

The one exception to the selector rule: ``time()`` (no selector at all)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: PromQL's tokens that matter here: strings, ranges and grouping label lists (skipped), a
#: name with its braces and whether a call follows, braces alone.
TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\[[^\]]*\]|\b(?:by|without|on|ignoring)\s*\([^)]*\)'
                   r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<braces>\{[^}]*\})?(?P<call>\s*\()?"
                   r"|(?P<bare>\{[^}]*\})")
#: Names that are operators, modifiers or aggregations (``sum by (x) (...)``), not metrics.
KEYWORDS = frozenset({"or", "and", "unless", "group_left", "group_right", "bool", "offset",
                      "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar",
                      "topk", "bottomk", "quantile", "count_values"})
SCOPE = ('job=~"$job"', 'instance=~"$instance"')


def unscoped_selectors(expr: str) -> list[str]:
    """The selectors of ``expr`` without both ``job=~"$job"`` and ``instance=~"$instance"``."""
    bad = []
    for token in TOKEN.finditer(expr):
        if token["bare"]:
            name, braces = "{}", token["bare"]
        elif token["name"] and not token["call"] and token["name"] not in KEYWORDS:
            name, braces = token["name"], token["braces"] or ""
        else:
            continue
        if not all(s in braces for s in SCOPE):
            bad.append(name)
    return bad


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}/{i}")


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))   # a collapsed row holds its panels
    return [p for p in out if p["type"] != "row"]


@pytest.fixture(params=DASHBOARDS, ids=lambda p: p.name)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return json.loads(request.param.read_text())


def test_there_is_a_dashboard() -> None:
    assert DASHBOARDS


def test_no_datasource_is_named_anywhere(dashboard: dict[str, Any]) -> None:
    for path, node in walk(dashboard):
        if path.endswith("/datasource"):
            assert node == DATASOURCE, path
        if path.endswith("/uid") and path != "/uid":   # only the dashboard's own uid
            assert node == "${datasource}", path
        if isinstance(node, str) and not path.startswith("/__inputs/"):
            # the import screen's input is not referenced: file provisioning would not
            # replace ${DS_PROMETHEUS}, the datasource variable works in both
            assert "platereg-prometheus" not in node and "DS_PROMETHEUS" not in node, path
    assert dashboard.get("id") is None


def test_every_panel_and_target_uses_the_datasource_variable(dashboard) -> None:
    assert len(panels(dashboard)) >= 20
    for panel in panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_every_query_is_narrowed_to_job_and_instance(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        for target in panel["targets"]:
            assert unscoped_selectors(target["expr"]) == [], (panel["title"], target["expr"])


def test_the_selector_check_can_fail() -> None:
    assert unscoped_selectors('sum(rate(platereg_dlq_total[5m]))') == ["platereg_dlq_total"]
    assert unscoped_selectors('up{job=~"$job"}') == ["up"]
    assert unscoped_selectors('time() - max(x{job=~"$job", instance=~"$instance"})') == []
    assert unscoped_selectors(
        'sum by (le) (rate(a_bucket{instance=~"$instance", job=~"$job", le="0.5"}[1m]))'
        ' / ignoring (le) group_left sum(rate(b{job=~"$job"}[$__rate_interval]))') == ["b"]


def test_inputs_requires_and_variables(dashboard: dict[str, Any]) -> None:
    (source,) = dashboard["__inputs"]
    assert (source["type"], source["pluginId"]) == ("datasource", "prometheus")
    required = {(r["type"], r["id"]) for r in dashboard["__requires"]}
    assert {("grafana", "grafana"), ("datasource", "prometheus")} <= required
    assert {("panel", p["type"]) for p in panels(dashboard)} <= required
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance"]   # each after what it uses
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == (
        "datasource", "prometheus")
    for name in ("job", "instance"):
        variable = variables[name]
        assert variable["type"] == "query" and variable["datasource"] == DATASOURCE
        assert variable["multi"] and variable["includeAll"], name
        assert f"{name})" in variable["query"]["query"] == variable["definition"]
    assert 'job=~"$job"' in variables["instance"]["definition"]
