"""Writing the files of an engine directory: large files hashed while they are written, and the manifest that
records every file's size and sha256 (publish.py then puts the directory in place)."""

from __future__ import annotations

import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from gptoss.runtime.manifest import MANIFEST, Manifest, file_entry

from .linux import start_writeback


def write_manifest(staging: Path, manifest: Manifest, files: dict[str, Path], hashed: dict[str, dict]) -> None:
    """Record size and sha256 of `files` (role -> path in `staging`) next to the entries of files `hashed` while
    they were written, and write the manifest there."""
    manifest.files = hashed | {role: file_entry(path) for role, path in files.items()}
    (staging / MANIFEST).write_text(manifest.dumps())


class HashingWriter:
    """Appends bytes to a file while computing its size and sha256. The hash runs on its own thread (hashlib
    releases the GIL), so writing and hashing overlap; up to `IN_FLIGHT` written buffers wait for it, and the
    caller must not change a buffer it wrote."""

    IN_FLIGHT = 4
    WRITE_BEHIND = 128 << 20  # bytes written before their writeback to disk is started

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._unflushed_from = 0
        self._digest = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(1)
        self._pending: deque[Future] = deque()
        self._file = open(path, "wb")  # noqa: SIM115  (closed by close())

    def write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self._pending.append(self._hasher.submit(self._digest.update, data))
        while len(self._pending) > self.IN_FLIGHT:
            self._pending.popleft().result()
        self.size += len(data)
        if self.size - self._unflushed_from >= self.WRITE_BEHIND:
            self._file.flush()
            start_writeback(self._file.fileno(), self._unflushed_from, self.size - self._unflushed_from)
            self._unflushed_from = self.size

    def pad_to(self, alignment: int) -> None:
        self.write(bytes(-self.size % alignment))

    def close(self) -> dict[str, int | str]:
        """Close the file, on disk; returns its manifest entry (name, size, sha256)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        for future in self._pending:
            future.result()
        self._hasher.shutdown()
        return {"name": self.path.name, "size": self.size, "sha256": self._digest.hexdigest()}
