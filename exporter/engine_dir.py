"""Writing an engine directory so that an interrupted build never leaves a file that looks finished.

Files are produced in a hidden staging directory inside the target; on success the old manifest is
removed first, each file is renamed into place, and the new manifest is renamed last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from gptoss.runtime.manifest import MANIFEST, Manifest, file_entry

from .errors import GptOssError
from .writeback import start_writeback


@contextmanager
def staged_engine_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a staging directory; on normal exit its files move into `out_dir`, otherwise it is removed."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
    except OSError as exc:
        raise GptOssError(f"{out_dir}: cannot write the engine directory ({exc.strerror})") from None
    try:
        yield staging
        _publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, out_dir: Path) -> None:
    manifest = staging / MANIFEST
    if not manifest.is_file():
        raise GptOssError(f"{staging}: build finished without a {MANIFEST}")
    (out_dir / MANIFEST).unlink(missing_ok=True)
    for path in sorted(staging.iterdir()):
        if path != manifest:
            os.replace(path, out_dir / path.name)
    os.replace(manifest, out_dir / MANIFEST)


def write_manifest(staging: Path, manifest: Manifest, files: dict[str, Path], hashed: dict[str, dict]) -> None:
    """Record size and sha256 of `files` (role -> path in `staging`) next to the entries of files `hashed` while
    they were written, and write the manifest there."""
    manifest.files = hashed | {role: file_entry(path) for role, path in files.items()}
    (staging / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")


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
