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
