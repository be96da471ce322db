"""Progress of long build steps, reported through `logging` (the CLI shows it on stderr)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("gptoss.progress")


@contextmanager
def stage(description: str) -> Iterator[None]:
    """Log the start of a build stage and, when it ends, how long it took."""
    log.info("%s ...", description)
    start = time.perf_counter()
    yield
    log.info("%s done in %.1f s", description, time.perf_counter() - start)


class ByteProgress:
    """Logs bytes done, rate and time left of a long write, at most every `interval` seconds."""

    def __init__(self, description: str, total: int, interval: float = 2.0) -> None:
        self.description, self.total, self.interval = description, total, interval
        self.done = 0
        self._start = self._last = time.perf_counter()

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            rate = self.done / max(now - self._start, 1e-9)
            left = (self.total - self.done) / max(rate, 1e-9)
            log.info(
                "  %s: %.2f / %.2f GiB, %.0f MiB/s, %.0f s left",
                self.description, self.done / 2**30, self.total / 2**30, rate / 2**20, left,
            )  # fmt: skip

    def finish(self) -> None:
        seconds = time.perf_counter() - self._start
        log.info(
            "  %s: %.2f GiB in %.1f s (%.0f MiB/s)",
            self.description, self.done / 2**30, seconds, self.done / 2**20 / max(seconds, 1e-9),
        )  # fmt: skip
