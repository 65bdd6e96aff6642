"""CPU time of process trees from /proc (bench/cpu.py): a child's work is counted while it
runs and, once reaped, in its parent's reaped times."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.cpu import Meter, process_cpu, tree_cpu, waited_children_cpu

BUSY = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"


def test_a_childs_cpu_is_counted_alive_and_reaped():
    meter = Meter({"me": os.getpid()}).start()
    before = waited_children_cpu()
    subprocess.run([sys.executable, "-c", BUSY], check=True)
    assert waited_children_cpu() - before >= 0.35
    assert meter.read()["me"] >= 0.35          # reaped: in this process's cutime
    shell = subprocess.Popen(["/bin/sh", "-c", f"{sys.executable} -c '{BUSY}'; sleep 5"])
    try:
        start = tree_cpu(shell.pid)
        for _ in range(100):
            if tree_cpu(shell.pid) - start >= 0.35:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert tree_cpu(shell.pid) - start >= 0.35   # the grandchild, reaped by the shell
        assert process_cpu(shell.pid) < 0.35         # the shell's own time alone
    finally:
        shell.kill()
        shell.wait()
