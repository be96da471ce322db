"""Writing an engine directory so that an interrupted build never leaves a file that looks finished.

Files are produced in a hidden staging directory inside the target; on success the old manifest is
removed first, each file is renamed into place, and the new manifest is renamed last.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gptoss.runtime.manifest import MANIFEST, Manifest, file_entry

from .errors import GptOssError


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
