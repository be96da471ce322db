"""The command line: every failure is one line `error: <where>: <what>` and exit status 1, never a traceback
(unless --verbose)."""

from __future__ import annotations

import errno
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gptoss.exporter import cli
from gptoss.exporter.engine_dir import HashingWriter


def _cli(*args: str | bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptoss.exporter", *args], capture_output=True)


def _one_line_error(result: subprocess.CompletedProcess | tuple[int, str], *expected: str) -> None:
    code, stderr = (result.returncode, result.stderr.decode()) if hasattr(result, "returncode") else result
    assert code == 1, stderr
    lines = stderr.strip().splitlines()  # progress lines of a build come first
    assert lines[-1].startswith("error: ") and "Traceback" not in stderr, stderr
    assert [line for line in lines if line.startswith("error")] == lines[-1:]
    stderr = lines[-1]
    for text in expected:
        assert text in stderr


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the CLI's entry point in this process (so a test can break something inside it)."""
    monkeypatch.setattr(sys, "argv", ["gptoss-export", *args])
    monkeypatch.setattr(logging.root, "handlers", [])  # the CLI logs to this test's stderr, not an earlier one's
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, capsys.readouterr().err


def test_disk_full_while_writing(checkpoint_factory, tmp_path, monkeypatch, capsys):
    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(HashingWriter, "write", full)
    out = tmp_path / "engine"
    result = _main(monkeypatch, capsys, "build", str(checkpoint_factory("demo")), "--out", str(out))
    _one_line_error(result, "model.onnx.data: No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_unexpected_errors_are_one_line_unless_verbose(checkpoint_factory, tmp_path, monkeypatch, capsys):
    def broken(*args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("gptoss.exporter.build.export_step_graph", broken)
    args = ("build", str(checkpoint_factory("demo")), "--out", str(tmp_path / "engine"))
    _one_line_error(_main(monkeypatch, capsys, *args), "internal error (ZeroDivisionError: a bug)", "--verbose")
    monkeypatch.setattr(sys, "argv", ["gptoss-export", "--verbose", *args])
    with pytest.raises(ZeroDivisionError):
        cli.main()


def test_invalid_tokenizer_fails_the_build_before_writing(checkpoint_factory, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(checkpoint_factory("demo"), checkpoint)
    (checkpoint / "tokenizer.json").write_text('{"model": "nothing"}')
    _one_line_error(_cli("build", str(checkpoint), "--out", str(tmp_path / "engine")), "tokenizer.json: not a")
    assert not (tmp_path / "engine").exists()


def test_prompt_that_is_not_utf8(engines):
    _one_line_error(_cli("generate", str(engines["causal"]), "--prompt", b"caf\xe9"), "prompt 0: not valid UTF-8")


def test_stream_prints_every_prompt(engines):
    args = ("generate", str(engines["causal"]), "--max-new-tokens", "3", "--stream")
    result = _cli(*args, "-p", "one", "-p", "two")
    assert result.returncode == 0
    lines = result.stdout.decode().splitlines()
    assert [line.split("]")[0] for line in lines] == ["[prompt 0", "[prompt 1"]


def test_inspect_verify_catches_a_flipped_byte(engines, tmp_path):
    engine = tmp_path / "engine"
    shutil.copytree(engines["causal"], engine)
    assert "sha256 checked" in _cli("inspect", str(engine), "--verify").stdout.decode()
    data = engine / "model.onnx.data"
    with open(data, "r+b") as handle:
        handle.seek(data.stat().st_size // 2)
        byte = handle.read(1)[0]
        handle.seek(-1, 1)
        handle.write(bytes([byte ^ 1]))
    assert _cli("inspect", str(engine)).returncode == 0  # sizes alone cannot tell
    _one_line_error(_cli("inspect", str(engine), "--verify"), f"{data}: sha256 differs")


def test_missing_paths_are_one_line(tmp_path):
    _one_line_error(_cli("inspect", str(tmp_path / "nowhere")), "nowhere")
    _one_line_error(_cli("generate", str(tmp_path / "nowhere"), "-p", "hi"), "nowhere")


@pytest.mark.parametrize("seed", ["-1"])
def test_bad_seed_on_the_command_line(engines, seed):
    _one_line_error(_cli("generate", str(engines["causal"]), "-p", "hi", "--sample", "--seed", seed), "seed")


def test_engine_dir_holds_only_engine_files(engines):
    assert sorted(p.name for p in Path(engines["causal"]).iterdir()) == [
        "manifest.json", "model.onnx", "model.onnx.data", "tokenizer.json",
    ]  # fmt: skip
