"""A command in a pseudo-terminal of a fixed size, and the screen a user would see.

:class:`TerminalSession` starts a command as a shell starts a foreground job (a new
session whose controlling terminal is the pseudo-terminal, so Ctrl-C typed there
reaches its whole foreground process group) and feeds everything it writes to pyte, a
terminal emulator, so the screen (what an 80x24 terminal shows after rich's cursor
movements and redraws) can be read as lines of text. The test of ``make run`` uses it;
so does ``python -m devtools.screen``, which writes a capture of ``make run``'s screen
(text, and a PNG drawn with matplotlib) for the docs::

    python -m devtools.screen --seconds 60 --text docs/make-run-terminal.txt \\
        --png docs/make-run-terminal.png -- make run

pyte and matplotlib are in the ``dev`` extra: this module is for tests and docs.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Sequence
from pathlib import Path


def _controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class TerminalSession:
    """``argv`` running in a ``columns`` x ``lines`` pseudo-terminal, its screen in pyte."""

    def __init__(self, argv: Sequence[str], *, cwd: Path | str | None = None,
                 env: dict[str, str] | None = None, columns: int = 80, lines: int = 24) -> None:
        import pyte

        self.screen = pyte.Screen(columns, lines)
        self.stream = pyte.ByteStream(self.screen)
        self.lock = threading.Lock()
        self.raw = bytearray()            # everything written, for checks on the whole output
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        env = {**(env if env is not None else os.environ), "TERM": "xterm-256color",
               "COLUMNS": str(columns), "LINES": str(lines)}
        self.proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=slave, stdout=slave,
                                     stderr=slave, start_new_session=True,
                                     preexec_fn=_controlling_terminal)
        os.close(slave)
        self.master = master
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self.lock:
                self.stream.feed(chunk)
                self.raw.extend(chunk)

    def display(self) -> list[str]:
        """The screen now: one string per line, trailing spaces removed."""
        with self.lock:
            return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.display())

    def wait_for(self, text: str, timeout: float) -> list[str]:
        """The screen once ``text`` is on it; AssertionError after ``timeout`` seconds or
        if the command exits first."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.display()
            if any(text in line for line in screen):
                return screen
            if self.proc.poll() is not None:
                raise AssertionError(f"exited ({self.proc.returncode}) before {text!r} was on "
                                     "the screen:\n" + "\n".join(screen))
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} on the screen within {timeout:.0f} s:\n"
                                     + "\n".join(screen))
            time.sleep(0.2)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def ctrl_c(self) -> None:
        self.type(b"\x03")

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        try:
            os.close(self.master)
        except OSError:
            pass


def render_png(lines: Sequence[str], path: Path, *, columns: int = 80) -> None:
    """The screen as a picture: light text on a dark background, one monospace cell per
    character."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cell_w, cell_h = 0.09, 0.19        # inches per character cell (10 pt DejaVu Sans Mono)
    fig = plt.figure(figsize=(columns * cell_w + 0.4, len(lines) * cell_h + 0.4), dpi=110)
    fig.patch.set_facecolor("#1e1e1e")
    for row, line in enumerate(lines):
        fig.text(0.2 / fig.get_figwidth(), 1 - (0.2 + (row + 0.8) * cell_h) / fig.get_figheight(),
                 line, family="DejaVu Sans Mono", fontsize=10, color="#e6e6e6")
    fig.savefig(path, facecolor=fig.get_facecolor())
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60,
                        help="how long after WAIT_FOR appears to capture the screen")
    parser.add_argument("--wait-for", default="Press Ctrl-C", help="text to wait for")
    parser.add_argument("--text", type=Path, help="write the screen as text here")
    parser.add_argument("--png", type=Path, help="write the screen as a PNG here")
    parser.add_argument("command", nargs="+", help="the command (after --)")
    args = parser.parse_args(argv)
    session = TerminalSession(args.command)
    try:
        session.wait_for(args.wait_for, timeout=600)
        time.sleep(args.seconds)
        lines = session.display()
        session.ctrl_c()
        code = session.wait(120)
    finally:
        session.close()
    if args.text:
        args.text.write_text("\n".join(lines) + "\n")
    if args.png:
        render_png(lines, args.png)
    print("\n".join(lines))
    print(f"exit status {code}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
