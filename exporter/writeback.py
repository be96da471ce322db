"""Start the disk writeback of a file's freshly written bytes without waiting for it (Linux `sync_file_range`).

A build writes gigabytes; left to the kernel, they pile up as dirty pages until a global threshold or, under a
memory limit, until reclaim must wait for them. Starting the writeback as the writer goes keeps few pages dirty
and makes the final `fsync` short. Elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range():  # noqa: ANN202  (a ctypes function, or None)
    if not sys.platform.startswith("linux"):
        return None
    function = getattr(ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True), "sync_file_range", None)
    if function is not None:
        function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return function


_SYNC = _sync_file_range()


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing `nbytes` at `offset` of `fd` to disk; returns at once."""
    if _SYNC is not None:
        _SYNC(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)
