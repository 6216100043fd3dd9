"""A one-line progress bar on a terminal; silent when the stream is not a TTY (pipes, CI logs)."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

BAR_WIDTH = 24


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.done = 0
        self.enabled = total > 0 and self.stream.isatty()
        self._started = time.monotonic()
        self._last_draw = 0.0

    def advance(self, label: str) -> None:
        self.done += 1
        now = time.monotonic()
        # Redrawing on every file of a big folder would cost more than the ingest; ~10 frames/s is plenty.
        if self.enabled and (now - self._last_draw >= 0.1 or self.done == self.total):
            self._last_draw = now
            self._draw(label)

    def _draw(self, label: str) -> None:
        filled = BAR_WIDTH * self.done // self.total
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        elapsed = time.monotonic() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        head = f"[{bar}] {self.done}/{self.total} {100 * self.done // self.total:3d}% {rate:5.1f}/s "
        room = shutil.get_terminal_size((80, 24)).columns - len(head) - 1
        tail = label if len(label) <= room else "…" + label[-(room - 1) :] if room > 1 else ""
        self.stream.write("\r\x1b[2K" + head + tail)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
