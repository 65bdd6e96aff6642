"""Worker processes that exit with the process that started them.

Standard library only: a worker process imports this module to run its initializer,
and should import nothing it does not use (``registry.consumer.parse_worker``).
"""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(parent_pid: int, every: float = 0.5) -> None:
    """Worker-process initializer: exit as soon as process ``parent_pid`` is gone (a
    ``kill -9`` of the parent leaves no orphans)."""

    def watch() -> None:
        while True:
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass
            time.sleep(every)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
