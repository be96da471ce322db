"""Publishing an engine directory: at every instant the path holds a whole engine (old or new), a build killed at
any stage leaves the old engine, and the next build removes what the killed one left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gptoss.exporter.build import BuildOptions, build
from gptoss.runtime import GptOssError
from gptoss.runtime.manifest import read_manifest

# Lines the CLI logs as a build goes (exporter/progress.py `stage`), in order; a build is killed when one appears.
STAGES = ["tracing the cache step", "writing model.onnx.data:", "hashing files and writing manifest.json",
          "publishing"]  # fmt: skip


def _whole_engine(out: Path) -> int:
    """The max_seq_len of the complete engine at `out` (every file present, with its recorded size and hash)."""
    manifest = read_manifest(out)
    manifest.verify_files(check_hashes=True)
    return manifest.max_seq_len


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.partial-"))


def _cli_build(checkpoint: Path, out: Path, max_seq_len: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "gptoss.exporter", "build", str(checkpoint), "--out", str(out),
               "--max-seq-len", str(max_seq_len)]  # fmt: skip
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True)


def _kill_at(process: subprocess.Popen, stage: str) -> bool:
    """SIGKILL `process` as soon as it logs `stage`; False if it finished first."""
    for line in process.stderr:
        if line.strip().startswith(stage):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
    process.wait()
    return False


@pytest.mark.parametrize("stage", STAGES)
def test_a_build_killed_at_any_stage_leaves_the_old_engine(checkpoint_factory, tmp_path, stage):
    checkpoint = checkpoint_factory("demo", expert_format="mxfp4")
    out = tmp_path / "engine"
    build(checkpoint, out, BuildOptions(max_seq_len=128))
    watching, seen, errors = threading.Event(), set(), []

    def watch() -> None:  # the path must hold a whole engine at every instant of the killed build
        while not watching.is_set():
            try:
                directory = out.stat().st_ino
                value = _whole_engine(out)
                if out.stat().st_ino == directory:  # else the engine was swapped while it was read: read again
                    seen.add(value)
            except (OSError, GptOssError) as error:
                if out.stat().st_ino == directory:
                    errors.append(error)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        killed = _kill_at(_cli_build(checkpoint, out, 64), stage)
    finally:
        watching.set()
        watcher.join()
    assert killed, f"the build finished before logging {stage!r}"
    assert errors == [] and seen, "the path did not hold a whole engine at some instant"
    assert seen <= {128, 64} and _whole_engine(out) in (128, 64)  # the old engine, or the new one if it was published
    build(checkpoint, out, BuildOptions(max_seq_len=96))
    assert _whole_engine(out) == 96 and _leftovers(out) == []


def test_a_failed_build_keeps_the_old_engine_and_leaves_nothing(checkpoint_factory, tmp_path, monkeypatch):
    import gptoss.exporter.build as build_module

    checkpoint = checkpoint_factory("demo")
    out = tmp_path / "engine"
    build(checkpoint, out, BuildOptions(max_seq_len=128))

    def interrupted(model, path, data_name):
        path.write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "save_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(checkpoint, out, BuildOptions(max_seq_len=64))
    assert _whole_engine(out) == 128 and _leftovers(out) == []


def test_rebuild_replaces_the_whole_directory(checkpoint_factory, tmp_path):
    checkpoint = checkpoint_factory("demo")
    out = tmp_path / "engine"
    build(checkpoint, out, BuildOptions(max_seq_len=128))
    inode = out.stat().st_ino
    build(checkpoint, out, BuildOptions(max_seq_len=64))
    assert _whole_engine(out) == 64 and out.stat().st_ino != inode
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.onnx.data", "tokenizer.json"]
    assert _leftovers(out) == []


def test_a_running_build_keeps_its_staging_directory(checkpoint_factory, tmp_path):
    """Cleaning up leftovers spares the staging directory of a build of the same path that is still running."""
    from gptoss.exporter.publish import remove_abandoned_staging, staged_engine_dir

    out = tmp_path / "engine"
    with pytest.raises(GptOssError, match="without a manifest.json"), staged_engine_dir(out) as staging:
        remove_abandoned_staging(out)
        assert staging.is_dir()
    abandoned = tmp_path / ".engine.partial-dead"
    abandoned.mkdir()
    remove_abandoned_staging(out)
    assert not abandoned.exists()


@pytest.mark.parametrize(
    "existing, message",
    [
        ({"notes.txt": "mine"}, "not empty and not an engine directory"),
        ({"manifest.json": json.dumps({"files": {}}), "notes.txt": "mine"}, "notes.txt: not part of the engine"),
        ({"manifest.json": "{not json"}, "manifest.json: unreadable"),
    ],
)
def test_a_directory_that_is_not_an_engine_is_never_replaced(checkpoint_factory, tmp_path, existing, message):
    out = tmp_path / "engine"
    out.mkdir()
    for name, text in existing.items():
        (out / name).write_text(text)
    with pytest.raises(GptOssError, match=message):
        build(checkpoint_factory("demo"), out)
    assert sorted(os.listdir(out)) == sorted(existing)


def test_a_symlinked_engine_directory_is_replaced_where_it_points(checkpoint_factory, tmp_path):
    checkpoint = checkpoint_factory("demo")
    target, link = tmp_path / "v1", tmp_path / "current"
    build(checkpoint, target, BuildOptions(max_seq_len=128))
    link.symlink_to(target)
    build(checkpoint, link, BuildOptions(max_seq_len=64))
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert _whole_engine(link) == 64 and _leftovers(target) == [] and _leftovers(link) == []
