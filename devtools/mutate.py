"""``make mutate``: mutation testing of the modules where a silent change hurts most.

mutmut changes the code one small step at a time (an operator, a constant, a string, a
call's argument) and runs the tests that reach the changed function; a mutant that no
test notices "survived". Each :data:`GROUPS` entry names its modules, the functions
mutated (mutmut's names: ``x_<function>`` or ``xǁ<Class>ǁ<method>``) and the tests that
cover them, unit tests first, then the integration tests that reach what unit tests do
not (run in-process: mutmut learns which test reaches which function by running them
once, and only in-process calls count).

Each group runs in ``build/mutate/<group>`` (a pyproject with its ``[tool.mutmut]``
section and links to the tree; mutmut copies them into ``mutants/`` there), with at most
``--minutes`` of wall-clock time; what is not run by then is counted as not run. When a
group needs them, one PostgreSQL and one Apache Kafka are started for the whole run and
given to the tests by ``PLATEREG_DATABASE_URL`` / ``PLATEREG_KAFKA_BOOTSTRAP_SERVERS``
(the suite starts none of its own then). A group whose module does not exist yet (the
producer signatures, until they land) is skipped with a line saying so.

The report, ``build/mutate/report.md`` (not committed), gives per group the mutants,
killed (timeouts among them), survivors, the kill rate and the time, then every
survivor's diff; groups not run this time show their last run (``--report-only``
rebuilds it without running anything). Survivors listed in
``devtools/mutants-equivalent.txt`` (name, then why the change cannot be seen) are
reported as equivalent instead, as are mutants that only change the letter case of SQL
without quoted text; docs/testing.md ("Mutation testing") has the rates of the last
run. Not in CI.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import fnmatch
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutate"
EQUIVALENT_FILE = ROOT / "devtools" / "mutants-equivalent.txt"
#: What a group's directory links to (mutmut copies them into mutants/).
TREE = ("platereg", "schemas", "registry", "notifications", "ingest", "wiring", "devtools",
        "tests", "deploy", "docs", "README.md", "constraints.txt", "docker-compose.yml")


@dataclass(frozen=True)
class Group:
    name: str
    sources: tuple[str, ...]
    functions: tuple[str, ...]          # mutmut name patterns (fnmatch), module-qualified
    tests: tuple[str, ...]
    servers: bool = False               # needs PostgreSQL and Kafka
    children: int = 2                   # mutants run at once
    why_missing: str = ""               # the group waits for a module another branch adds


def _fns(module: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{module}.{n}__mutmut_*" for n in names)


GROUPS: tuple[Group, ...] = (
    Group("fold", ("schemas/fold.py",),
          _fns("schemas.fold", "x_apply", "x_fold", "x_fold_until", "x_today_in", "x__date",
               "x__owner", "xǁPlateStateǁ*"),
          ("tests/unit/test_registry_fold.py", "tests/unit/test_registry_fold_edges.py",
           "tests/unit/test_registry_view_at.py", "tests/unit/test_registry_status_changes.py",
           "tests/unit/test_apply_batch.py")),
    Group("apply", ("registry/consumer/apply.py", "registry/consumer/batch.py"),
          _fns("registry.consumer.apply", "x_apply_batch", "x__fold_plates", "x__dead_letter")
          + _fns("registry.consumer.batch", "x_authorize", "x_classify", "x_plan_plates",
                 "x_fold_history", "x__apply_checked", "x_check_state",
                 "x_state_shape_problem", "x_status_changes", "x_status_change", "x__change",
                 "x_view_of", "x__view_inputs"),
          ("tests/unit/test_apply_batch.py", "tests/unit/test_registry_batch_edges.py",
           "tests/unit/test_registry_fold.py", "tests/unit/test_registry_status_changes.py",
           "tests/unit/test_registry_quarantine.py")),
    Group("offsets", ("registry/consumer/store.py", "registry/consumer/loop.py"),
          _fns("registry.consumer.store", "xǁRegistrySqlǁensure_offsets",
               "xǁRegistrySqlǁreset_offset", "xǁRegistrySqlǁlock_offsets",
               "xǁRegistrySqlǁset_offsets")
          + _fns("registry.consumer.loop", "xǁ_Batchǁdrop_before", "xǁ_Batchǁ_index"),
          ("tests/unit/test_consumer_batch_window.py", "tests/unit/test_crash_points.py",
           "tests/integration/test_consumer_offsets.py",
           "tests/integration/test_consumer_fence_reseek.py",
           "tests/integration/test_seams_fencing.py::"
           "test_a_consumer_frozen_mid_batch_is_fenced_after_losing_its_partitions"),
          servers=True, children=1),
    Group("notices", ("notifications/store.py", "notifications/dispatcher.py"),
          _fns("notifications.store", "x_insert_drafts", "x_enqueue", "x_claim_due",
               "x_record_attempts", "x_set_last_day", "x_queue_rechecks")
          + _fns("notifications.dispatcher", "x_backoff", "x_decide", "x_read_notice",
                 "xǁDispatcherǁ_enqueue", "xǁDispatcherǁdeliver"),
          ("tests/unit/test_notices_retry.py", "tests/unit/test_notices_read.py",
           "tests/unit/test_notices_dispatch_loop.py", "tests/integration/test_notices_store.py",
           "tests/integration/test_notices_dispatch.py"),
          servers=True, children=1),
    Group("owner_data", ("registry/owner/data.py",),
          _fns("registry.owner.data", "x_plates", "x_notices", "x__preferences",
               "x_preferences", "x_put_preferences", "x_access_log", "x_self_read_rows",
               "x_mint_row"),
          ("tests/unit/test_owner_audit_rows.py", "tests/integration/test_owner_data.py",
           "tests/integration/test_owner_access.py"), servers=True, children=1),
    Group("audit", ("registry/api/audit.py",),
          _fns("registry.api.audit", "x__full", "x_purge", "xǁAuditWriterǁ*"),
          ("tests/unit/test_api_reading_rows.py", "tests/integration/test_audit_writer.py",
           "tests/integration/test_api_audit.py", "tests/integration/test_audit_kill.py"),
          servers=True, children=1),
    Group("policy", ("schemas/policy.py",),
          _fns("schemas.policy", "x_check_grant", "x_reason_of", "xǁPolicyǁ*",
               "x_compile_policy", "x_prefix_allows", "xǁGrantǁ*"),
          ("tests/unit/test_source_policy.py", "tests/unit/test_source_policy_edges.py",
           "tests/unit/test_apply_batch.py", "tests/unit/test_registry_batch_edges.py")),
    Group("policy_store", ("platereg/security/policy_store.py",),
          _fns("platereg.security.policy_store", "x_policy_version", "x_load_grants",
               "x_load_policy", "x_set_grant", "x_remove_grants", "xǁPolicyCacheǁ*"),
          ("tests/integration/test_policy_store.py", "tests/integration/test_sources.py"),
          servers=True, children=1),
    Group("signing", ("schemas/signing.py",), ("schemas.signing.*__mutmut_*",),
          ("tests/unit/test_signing.py",),
          why_missing="producer signatures (branch `signed`) have not landed"),
)


# --------------------------------------------------------------------------- servers

@contextlib.contextmanager
def servers(base: Path) -> Iterator[dict[str, str]]:
    """One PostgreSQL (fsync off) and one Kafka node for every group's tests."""
    from devtools.apache_kafka import KafkaCluster
    from devtools.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(base / "pg", durable=False)
    kafka = KafkaCluster(base / "kafka", nodes=1, heap_mb=384)
    try:
        dsn = pg.start()
        kafka.start()
        yield {"PLATEREG_DATABASE_URL": dsn, "PLATEREG_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap}
    finally:
        kafka.stop()
        pg.stop()


# --------------------------------------------------------------------------- one group

#: mutmut's outcomes that count as a kill (segfault: the run died, e.g. on SIGKILL) ...
KILLED = ("killed", "timeout", "caught by type check", "segfault")
#: ... and those of a mutant that was not run (the time limit, an interruption).
NOT_RUN = ("not checked", "skipped", "check was interrupted by user")


@dataclass
class Result:
    group: Group
    statuses: Counter = field(default_factory=Counter)
    survivors: dict[str, str] = field(default_factory=dict)     # name -> diff
    equivalent: dict[str, str] = field(default_factory=dict)    # name -> reason
    seconds: float = 0.0
    note: str = ""

    @property
    def tried(self) -> int:
        return sum(n for s, n in self.statuses.items() if s not in NOT_RUN)

    @property
    def killed(self) -> int:
        return sum(self.statuses[s] for s in KILLED)

    def rate(self) -> str:
        counted = self.tried - len(self.equivalent)
        return f"{100 * self.killed / counted:.1f}%" if counted else "-"


def _toml_list(items: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def prepare(group: Group) -> Path:
    """A fresh directory for the group (mutmut re-runs every mutant it is named anyway)."""
    work = WORK / group.name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for name in TREE:
        link = work / name
        if not link.exists() and (ROOT / name).exists():
            link.symlink_to(ROOT / name)
    config = (ROOT / "pyproject.toml").read_text() + f"""

[tool.mutmut]
source_paths = {_toml_list(group.sources)}
pytest_add_cli_args_test_selection = {_toml_list(group.tests)}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "--timeout=600"]
also_copy = {_toml_list([n for n in TREE if (ROOT / n).exists()])}
timeout_multiplier = 5.0
"""
    (work / "pyproject.toml").write_text(config)
    return work


def run_group(group: Group, minutes: float, env: dict[str, str],
              equivalent: dict[str, str]) -> Result:
    result = Result(group)
    missing = [s for s in group.sources if not (ROOT / s).exists()]
    if missing:
        result.note = (f"skipped: {', '.join(missing)} does not exist yet"
                       f" ({group.why_missing or 'module missing'})")
        print(f"== {group.name}: {result.note}", flush=True)
        (WORK / group.name).mkdir(parents=True, exist_ok=True)
        save(result, WORK / group.name)
        return result
    work = prepare(group)
    started = time.monotonic()
    log = (work / "mutmut.log").open("w")
    print(f"== {group.name}: mutmut on {', '.join(group.sources)} "
          f"(at most {minutes:g} min; log {work / 'mutmut.log'})", flush=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mutmut", "run", "--max-children", str(group.children),
         *group.functions], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        proc.wait(timeout=minutes * 60)
    except subprocess.TimeoutExpired:
        result.note = f"stopped at the time limit ({minutes:g} min)"
    finally:
        if proc.poll() is None:
            stop_group(proc)
        log.close()
    result.seconds = time.monotonic() - started
    if proc.returncode not in (0, -signal.SIGINT, 130) and not result.note:
        result.note = f"mutmut exited with {proc.returncode} (see its log)"
    collect(result, work, env, equivalent)
    save(result, work)
    return result


def stop_group(proc: subprocess.Popen) -> None:
    """End mutmut and the mutants it forked (SIGTERM, then SIGKILL): it saves each
    mutant's result as it gets it, so what it has tested counts. Not SIGINT: a process
    started in the background by a shell ignores it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


_LINE = re.compile(r"^\s*(\S+__mutmut_\d+): (.+)$")


def collect(result: Result, work: Path, env: dict[str, str], equivalent: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                          cwd=work, env=env, capture_output=True, text=True)
    patterns = result.group.functions
    for line in done.stdout.splitlines():
        m = _LINE.match(line)
        if not m or not any(fnmatch.fnmatch(m.group(1), p) for p in patterns):
            continue
        name, status = m.group(1), m.group(2).strip()
        if status == "timeout" and sql_case_only(mutant_diff(work, name)):
            status = "survived"   # an equivalent mutant that ran out of time: the load
        result.statuses[status] += 1
        if status in ("survived", "no tests", "suspicious"):
            diff = mutant_diff(work, name)
            if name in equivalent:
                result.equivalent[name] = equivalent[name]
            elif sql_case_only(diff):
                result.equivalent[name] = SQL_CASE
            else:
                result.survivors[name] = f"({status})\n" + diff


def save(result: Result, work: Path) -> None:
    """The group's time and note beside its mutants, so that the report shows every
    group's last run (``--groups`` runs only some)."""
    (work / "result.json").write_text(json.dumps({
        "statuses": dict(result.statuses), "seconds": result.seconds,
        "note": result.note}, indent=1))


def load(group: Group, equivalent: dict[str, str]) -> Result | None:
    """A group's last run: its time and note as saved, its mutants' outcomes read again
    from mutmut's results (so an edit of the equivalent list shows at once)."""
    path = WORK / group.name / "result.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    result = Result(group, seconds=data["seconds"], note=data["note"])
    if (WORK / group.name / "mutants").exists():
        collect(result, WORK / group.name, dict(os.environ), equivalent)
    return result


@functools.cache
def _functions(path: Path) -> dict[str, list[str]]:
    """Every function of one of mutmut's module copies, by name: its lines."""
    text = path.read_text()
    lines = text.splitlines()
    return {node.name: lines[node.lineno - 1:node.end_lineno]
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and "__mutmut_" in node.name}


def mutant_diff(work: Path, name: str) -> str:
    """The mutant's change as a diff of its function against the original, read from
    mutmut's copy of the module (what ``mutmut show`` prints, without starting mutmut
    once per survivor)."""
    module, _, function = name.rpartition(".")
    found = _functions(work / "mutants" / (module.replace(".", "/") + ".py"))
    original = function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
    if original not in found or function not in found:
        return "(diff not found)"
    before = [line.replace(original, function, 1) for line in found[original]]
    return "\n".join(difflib.unified_diff(before, found[function], module, module,
                                           lineterm="", n=1))


SQL_CASE = ("only the letter case of SQL keywords and unquoted names changed, which "
            "PostgreSQL does not tell apart")
_SQL = re.compile(r"\b(select|from|where|insert|update|delete|order by|returning|values"
                  r"|excluded|on conflict|join|limit)\b", re.IGNORECASE)


def sql_case_only(diff: str) -> bool:
    """Whether a mutant only upper- or lower-cased a line of SQL without quoted text
    (mutmut's string mutation): an equivalent mutant, reported as such."""
    removed = [line[1:] for line in diff.splitlines()
               if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff.splitlines()
             if line.startswith("+") and not line.startswith("+++")]
    return (len(removed) == len(added) == 1 and removed != added
            and removed[0].lower() == added[0].lower()
            and "'" not in removed[0] and '\\"' not in removed[0]
            and bool(_SQL.search(removed[0])))


def read_equivalent() -> dict[str, str]:
    """``name  reason`` lines of EQUIVALENT_FILE (# comments)."""
    out = {}
    if EQUIVALENT_FILE.exists():
        for line in EQUIVALENT_FILE.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, reason = line.strip().partition(" ")
                out[name] = reason.strip()
    return out


def report(results: list[Result], seconds: float) -> str:
    lines = ["# Mutation testing report", "",
             f"Last run of `make mutate`: {seconds / 60:.1f} min; groups not in it show their"
             " own last run.", "",
             "| group | modules | mutants run | killed (of which timeouts) | survivors left |"
             " equivalent | no tests | not run | kill rate | minutes | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r.statuses
        lines.append(
            f"| {r.group.name} | {', '.join(r.group.sources)} | {r.tried} | {r.killed} "
            f"({s['timeout']}) | {len(r.survivors)} | {len(r.equivalent)} | {s['no tests']} | "
            f"{sum(s[k] for k in NOT_RUN)} | {r.rate()} | {r.seconds / 60:.1f} | {r.note} |")
    for r in results:
        if r.survivors or r.equivalent:
            lines += ["", f"## {r.group.name}", ""]
        for name, diff in r.survivors.items():
            lines += [f"### {name}", "", "```diff", diff, "```", ""]
        for name, reason in r.equivalent.items():
            lines.append(f"- equivalent: `{name}`: {reason}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.mutate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", default="",
                        help="comma-separated groups (default: all): "
                             + ", ".join(g.name for g in GROUPS))
    parser.add_argument("--minutes", type=float, default=12.0,
                        help="wall-clock limit per group (default 12)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: rebuild the report from each group's last run "
                             "(after an edit of the equivalent list)")
    args = parser.parse_args(argv)
    chosen = [g for g in GROUPS if not args.groups or g.name in args.groups.split(",")]
    if args.report_only:
        chosen = []
    unknown = set(filter(None, args.groups.split(","))) - {g.name for g in GROUPS}
    if unknown:
        parser.error(f"unknown groups: {', '.join(sorted(unknown))}")
    # Ctrl-C or a kill stops mutmut and then the servers (the finally clauses), even when
    # a shell started this in the background with SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    equivalent = read_equivalent()
    started = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="platereg-mutate-"))
    env = {**os.environ, "PYTEST_DEBUG_TEMPROOT": str(base), "PYTHONDONTWRITEBYTECODE": "1"}
    for key in ("PLATEREG_DATABASE_URL", "PLATEREG_KAFKA_BOOTSTRAP_SERVERS"):
        env.pop(key, None)
    results: list[Result] = []
    needs = any(g.servers and all((ROOT / s).exists() for s in g.sources) for g in chosen)
    try:
        with contextlib.ExitStack() as stack:
            if needs:
                env.update(stack.enter_context(servers(base)))
            for group in chosen:
                results.append(run_group(group, args.minutes, env, equivalent))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ran = {r.group.name: r for r in results}
    shown = [ran.get(g.name) or load(g, equivalent) for g in GROUPS]
    text = report([r for r in shown if r is not None], time.monotonic() - started)
    (WORK / "report.md").write_text(text)
    print(text.split("\n## ")[0])
    print(f"report: {WORK / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
