"""How the demo talks to the terminal: numbered steps and short marked lines, plain text.

    [2/7] Load LLM configuration
      ok  what happened
       $  the CLI command that does the same by hand
      !!  an expected refusal (the point of the step, not an error)
          more detail

On a terminal, steps are bold, markers coloured, and a wait shows a live line with the
seconds passed (erased when the wait ends); piped output gets the same lines without
escapes and without the live line, so it reads well in a log or a test.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_RESET = "\033[0m"
_BOLD = "\033[1m"
_GREEN = "\033[32m"
_YELLOW = "\033[33m"
_DIM = "\033[2m"
LIVE_AFTER = 0.3


class Console:
    def __init__(self, out: TextIO | None = None, *, color: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if color is None else color
        self._live = False
        self._shown_at = 0.0

    def _style(self, text: str, style: str) -> str:
        return f"{style}{text}{_RESET}" if self.tty else text

    def _line(self, text: str) -> None:
        self.clear_live()
        self.out.write(text + "\n")
        self.out.flush()

    def title(self, text: str) -> None:
        self._line(self._style(text, _BOLD))

    def step(self, number: int, total: int, text: str) -> None:
        self._line("")
        self._line(self._style(f"[{number}/{total}] {text}", _BOLD))

    def ok(self, text: str) -> None:
        self._line(f"  {self._style('ok', _GREEN)}  {text}")

    def refused(self, text: str) -> None:
        self._line(f"  {self._style('!!', _YELLOW)}  {text}")

    def cmd(self, text: str, *, continued: bool = False) -> None:
        self._line(self._style(f"{'      ' if continued else '   $  '}{text}", _DIM))

    def info(self, text: str) -> None:
        self._line(f"      {text}")

    def plain(self, text: str = "") -> None:
        self._line(text)

    # ---- progress while waiting

    def waiting(self, what: str, started: float) -> None:
        """Show (on a terminal) that ``what`` is still pending; call it from a poll loop.

        Nothing for the first ``LIVE_AFTER`` seconds (most waits are shorter), then at most
        ten updates a second."""
        now = time.monotonic()
        seconds = now - started
        if not self.tty or seconds < LIVE_AFTER or now - self._shown_at < 0.1:
            return
        self.out.write(f"\r\033[K  ..  {what} ({seconds:.1f} s)")
        self.out.flush()
        self._live = True
        self._shown_at = now

    def clear_live(self) -> None:
        if self._live:
            self.out.write("\r\033[K")
            self._live = False
