"""Programs from Debian packages that the benchmarks and tests run (``wrk``, ``promtool``,
``prometheus``): found on PATH, or installed with apt-get when missing and running as root.

Nothing in the services uses this; it only spares a developer or CI machine a manual
install step. ``apt-get update`` runs once per process, before the first install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

_APT_OPTIONS = ["-o", "DPkg::Lock::Timeout=300", "-qq"]
_updated = False


def can_install() -> bool:
    """True when apt-get exists and this process runs as root."""
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def find_or_install(program: str, package: str, *, who: str = "platereg") -> str | None:
    """The path of ``program``; installs Debian's ``package`` first when it is missing and
    this process may (root, apt-get). None when it is still missing."""
    global _updated
    found = shutil.which(program)
    if found or not can_install():
        return found
    print(f"{who}: {program} not found; installing the Debian package {package} "
          f"(apt-get install -y {package})", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _updated:
        subprocess.run(["apt-get", *_APT_OPTIONS, "update"], check=False, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
        _updated = True
    subprocess.run(["apt-get", *_APT_OPTIONS, "install", "-y", "--no-install-recommends",
                    package], check=False, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=600)
    return shutil.which(program)
