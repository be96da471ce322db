"""The one owner of an engine's cache rows: every generate and classify call, from any thread, runs through it.

A call submits its requests (one per prompt) and reads its own queue of events. One stepping thread, started when
work arrives and gone when none is left, admits queued requests into free rows, steps every active row at once,
lets each request turn its row of the output into an event (an increment, a classification) and the tokens to feed
next, and hands the event to the request's call. Calls therefore batch with each other (continuous batching), and
each still gets exactly what it would alone: a row's numbers do not depend on the other rows, and each request
samples from its own generator.

A request's row is released whatever ends it: its last event, its caller stopping to read (closing or dropping a
stream, an exception in the caller), or an error in the step or in the request itself, which goes to the calls it
concerns as a `GptOssError`; the other calls go on.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np

from .backends import Backend
from .cache_rows import CacheRows
from .errors import GptOssError

log = logging.getLogger(__name__)


class Request(Protocol):
    """One prompt's work: fed `prompt` first, then whatever `advance` asks for, until it returns no tokens."""

    prompt: list[int]

    def advance(self, output: np.ndarray, room: int) -> tuple[Any, list[int] | None]:
        """This step's event for the caller, from the request's row of the output, and the tokens to feed next
        (None: finished). `room`: cache slots left in the row."""


class _Call:
    """The requests of one caller and its queue of `(event or error, request finished)`."""

    def __init__(self, count: int) -> None:
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.remaining = count
        self.cancelled = False

    def fail(self, error: BaseException) -> None:
        self.cancelled = True
        message = str(error) if isinstance(error, GptOssError) else f"generation failed: {error!r}"
        failure = GptOssError(message)
        failure.__cause__ = error
        self.events.put((failure, True))


class Scheduler:
    """Runs the requests of every call over one set of cache rows (sized, when idle, to the waiting demand, at least
    `min_batch` and at most `max_batch`)."""

    def __init__(self, backend: Backend, max_batch: int, max_seq_len: int) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.max_seq_len = max_seq_len
        self.min_batch = 1  # a server raises it so that requests arriving one at a time still share the rows
        self._lock = threading.Condition()
        self._queue: deque[tuple[_Call, Request]] = deque()
        self._active: dict[int, tuple[_Call, Request, list[int]]] = {}  # row -> call, request, tokens to feed
        self._rows: CacheRows | None = None
        self._thread: threading.Thread | None = None
        self._held = False  # a caller has the rows to itself (`exclusive`)

    def run(self, requests: Sequence[Request]) -> Iterator[Any]:
        """The events of `requests`, in the order they happen; leaving the iterator early cancels what is left."""
        call = _Call(len(requests))
        with self._lock:
            self._queue.extend((call, request) for request in requests)
            self._start()
        try:
            while call.remaining:
                event, finished = call.events.get()
                if isinstance(event, BaseException):
                    raise event
                call.remaining -= finished
                yield event
        finally:
            call.cancelled = True  # no-op when every request finished; otherwise the rows are released next step

    def occupancy(self) -> tuple[int, int]:
        """(rows running a request, requests waiting for a row), for monitoring."""
        with self._lock:
            return len(self._active), sum(not call.cancelled for call, _ in self._queue)

    @contextmanager
    def exclusive(self, batch: int) -> Iterator[CacheRows]:
        """`batch` cache rows to step directly, once every running call is done; calls wait until it exits."""
        with self._lock:
            self._lock.wait_for(lambda: self._thread is None and not self._held)
            self._held = True
            rows = self._rows_for(min(batch, self.max_batch))
        try:
            yield rows
        finally:
            for row in np.flatnonzero(rows.in_use):
                rows.release(int(row))
            with self._lock:
                self._held = False
                self._start()
                self._lock.notify_all()

    # ------------------------------------------------------------------ the stepping thread

    def _start(self) -> None:
        if self._thread is None and not self._held and self._queue:
            # Not a daemon: it ends once no work is left, and the interpreter must let it, since a daemon thread
            # still freeing tensors while the interpreter finalizes aborts the process.
            self._thread = threading.Thread(target=self._loop, name="gptoss-scheduler", daemon=False)
            self._thread.start()

    def _loop(self) -> None:
        try:
            while self._step():
                pass
        except BaseException as error:  # a bug, or allocation failed: no caller may be left waiting
            log.exception("the scheduler stopped")
            with self._lock:
                for call in {call for call, *_ in self._active.values()} | {call for call, _ in self._queue}:
                    call.fail(error)
                self._queue.clear()
                self._active.clear()
                self._rows = None
                self._thread = None
                self._lock.notify_all()

    def _step(self) -> bool:
        """Admit, step and advance once; False (and the thread ends) when nothing is left to do."""
        with self._lock:
            self._drop_cancelled()
            self._admit()
            if not self._active:
                self._thread = None
                self._lock.notify_all()
                return False
            feed = {row: tokens for row, (_, _, tokens) in self._active.items()}
        rows = self._rows
        try:
            output = rows.step(feed)
        except Exception as error:
            with self._lock:
                for row, (call, _, _) in list(self._active.items()):
                    call.fail(error)
                    self._release(row)
            return True
        with self._lock:
            for row, (call, request, _) in list(self._active.items()):
                if call.cancelled:
                    self._release(row)
                    continue
                try:
                    event, tokens = request.advance(output[row], rows.max_seq_len - int(rows.lengths[row]))
                except Exception as error:
                    call.fail(error)
                    self._release(row)
                    continue
                call.events.put((event, tokens is None))
                if tokens is None:
                    self._release(row)
                else:
                    self._active[row] = (call, request, tokens)
        return True

    def _drop_cancelled(self) -> None:
        self._queue = deque(entry for entry in self._queue if not entry[0].cancelled)
        for row, (call, _, _) in list(self._active.items()):
            if call.cancelled:
                self._release(row)

    def _admit(self) -> None:
        """Move queued requests into free rows; when no row is busy, first size the rows to the queue."""
        if self._held or not self._queue:
            return
        if not self._active:
            self._rows = self._rows_for(min(max(len(self._queue), self.min_batch), self.max_batch))
        while self._queue and not self._rows.in_use.all():
            call, request = self._queue.popleft()
            self._active[self._rows.acquire()] = (call, request, request.prompt)

    def _rows_for(self, batch: int) -> CacheRows:
        if self._rows is None or self._rows.batch != batch:
            self._rows = CacheRows(self.backend, batch, self.max_seq_len)
        return self._rows

    def _release(self, row: int) -> None:
        self._rows.release(row)
        del self._active[row]
