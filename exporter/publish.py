"""Publishing an engine directory atomically: at every instant its path holds the whole old engine or the whole new
one, never a mix, never nothing.

A build writes into a hidden staging directory beside the target, `.<name>.partial-XXXXXXXX`, and holds a lock on
it while it runs. On success every file is synced and the staging directory takes the target's place in one step:
Linux `renameat2(RENAME_EXCHANGE)` swaps the two directories (a plain rename when the target does not exist yet),
then the old engine, now under the staging name, is deleted. Staging directories whose build died (their lock is
free) are deleted by the next build of the same path. Where the exchange is not available, the old directory is
renamed aside and the new one renamed in: a window of a few microseconds without an engine.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gptoss.runtime.manifest import MANIFEST

from .errors import GptOssError
from .linux import exchange
from .progress import stage


@contextlib.contextmanager
def staged_engine_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a staging directory; on normal exit it replaces `out_dir` atomically, otherwise it is removed. A
    symlink is followed: the directory it names is replaced, and the link keeps naming it."""
    out_dir = Path(out_dir).absolute()
    if out_dir.is_symlink():
        out_dir = out_dir.resolve()
    _check_replaceable(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_staging(out_dir)
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(out_dir), dir=out_dir.parent))
    except OSError as exc:
        raise GptOssError(f"{out_dir}: cannot write the engine directory ({exc.strerror})") from None
    lock = _lock(staging)
    try:
        yield staging
        _publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the failed build, or the old engine after the swap
        os.close(lock)


def remove_abandoned_staging(out_dir: Path) -> None:
    """Delete the staging directories of builds of `out_dir` that died (no process holds their lock)."""
    for path in out_dir.parent.glob(_staging_prefix(out_dir) + "*"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a build of the same path is running
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)


def _staging_prefix(out_dir: Path) -> str:
    return f".{out_dir.name}.partial-"


def _lock(directory: Path) -> int:
    """Hold an exclusive lock on `directory` until the returned descriptor is closed (or the process dies)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _check_replaceable(out_dir: Path) -> None:
    """`out_dir` may be replaced: it does not exist, is empty, or is an engine directory holding only its files."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise GptOssError(f"{out_dir}: exists and is not a directory; choose another --out")
    entries = {path.name for path in out_dir.iterdir()}
    if not entries:
        return
    if MANIFEST not in entries:
        raise GptOssError(f"{out_dir}: not empty and not an engine directory (no {MANIFEST}); a build replaces the "
                          f"whole directory, so choose another --out")  # fmt: skip
    try:
        listed = {entry["name"] for entry in json.loads((out_dir / MANIFEST).read_text())["files"].values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise GptOssError(f"{out_dir / MANIFEST}: unreadable, so the files of the engine it replaces are unknown; "
                          f"remove {out_dir} or choose another --out") from None  # fmt: skip
    foreign = sorted(entries - listed - {MANIFEST})
    if foreign:
        raise GptOssError(f"{out_dir / foreign[0]}: not part of the engine, and a build replaces the whole "
                          f"directory; move it or choose another --out")  # fmt: skip


def _publish(staging: Path, out_dir: Path) -> None:
    if not (staging / MANIFEST).is_file():
        raise GptOssError(f"{staging}: build finished without a {MANIFEST}")
    with stage(f"publishing {out_dir}"):
        for path in staging.iterdir():
            _fsync(path)
        _fsync(staging)
        if out_dir.exists():
            _swap(staging, out_dir)
        else:
            os.rename(staging, out_dir)
        _fsync(out_dir.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap(staging: Path, out_dir: Path) -> None:
    """Put `staging` at `out_dir` and the old `out_dir` at `staging`, in one step where the system allows."""
    if exchange(staging, out_dir):
        return
    aside = Path(tempfile.mkdtemp(prefix=_staging_prefix(out_dir), dir=out_dir.parent))
    os.replace(out_dir, aside)
    os.rename(staging, out_dir)
    os.rename(aside, staging)  # deleted with the staging directory
