"""Two Linux system calls Python's `os` lacks, through the C library; elsewhere they report "not available".

- `start_writeback` (`sync_file_range`): a build writes gigabytes; left to the kernel, they pile up as dirty pages
  until a global threshold or, under a memory limit, until reclaim must wait for them. Starting the writeback as
  the writer goes keeps few pages dirty and makes the final `fsync` short.
- `exchange` (`renameat2` with `RENAME_EXCHANGE`): swaps two paths in one step, so a directory can be replaced
  without an instant where its path is missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path

_SYNC_FILE_RANGE_WRITE = 2
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _libc_function(name: str, *argtypes: type) -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    function = getattr(ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True), name, None)
    if function is not None:
        function.argtypes = argtypes
    return function


_sync_file_range = _libc_function("sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
_renameat2 = _libc_function("renameat2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing `nbytes` at `offset` of `fd` to disk; returns at once (no-op elsewhere)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


def exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths atomically; False when this system or file system cannot (nothing was done)."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))
