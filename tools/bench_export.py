"""Export and engine-build benchmark at real GPT-OSS sizes, against a plain copy of the checkpoint.

For each model (`--model gpt-oss-20b` or `gpt-oss-120b:4`, a preset with an optional depth) it writes a
random-weight checkpoint in the hub's layout, times a plain copy of it, then runs each build in its own process
(`gptoss-export build --target onnx`, and `tensorrt-rtx` ahead of time for `--compute-capability`). Printed per
build: wall time and its ratio to the copy; the peak resident and peak anonymous memory of the build's processes
together (sampled every 0.2 s; anonymous memory is what the kernel cannot reclaim, while mapped checkpoint or data
pages are file cache); with `--export-cap`/`--build-cap` (root, cgroup v1 memory controller), the peak and the
failure count of a hard memory limit the build ran under; the engine directory's size against the checkpoint's.
Everything is deleted unless `--keep`.

Run as `python -m gptoss.tools.bench_export [--model gpt-oss-20b] [--model gpt-oss-120b:4 --model gpt-oss-120b:8]
[--targets onnx tensorrt-rtx] [--export-cap 4G] [--build-cap 16G] [--workdir DIR]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gptoss.tools.demo_model import write_hub_model

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


@dataclass
class Run:
    wall_s: float
    peak_rss: int
    peak_anon: int
    returncode: int
    cap: str | None = None
    cgroup_peak: int | None = None
    cgroup_failcnt: int | None = None
    stderr_tail: str = ""


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def drop_caches() -> bool:
    """Empty the page cache (root only) so copy and build both read from disk; False when not allowed."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def copy_seconds(checkpoint: Path, workdir: Path) -> float:
    """Seconds of `cp -r` of the checkpoint, flushed to disk; the copy is removed."""
    target = workdir / "copy"
    start = time.perf_counter()
    subprocess.run(["cp", "-r", str(checkpoint), str(target)], check=True)
    os.sync()
    seconds = time.perf_counter() - start
    shutil.rmtree(target)
    return seconds


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    pids, index = [pid], 0
    while index < len(pids):
        for children in Path(f"/proc/{pids[index]}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # the process ended meanwhile
                pids += [int(child) for child in children.read_text().split()]
        index += 1
    return pids


def _memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) of one process in KiB, (0, 0) once it is gone."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    except (OSError, ValueError):
        return 0, 0
    return int(fields.get("VmRSS", "0 kB").split()[0]), int(fields.get("RssAnon", "0 kB").split()[0])


class _MemorySampler(threading.Thread):
    """Samples the resident and the anonymous memory of a process and its descendants together (the build forks
    a weight writer) every 0.2 s, keeping the peaks."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_rss, self.peak_anon, self._done = pid, 0, 0, threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            rss, anon = map(sum, zip(*(_memory_kib(p) for p in _tree(self.pid)), strict=True))
            self.peak_rss, self.peak_anon = max(self.peak_rss, rss * 1024), max(self.peak_anon, anon * 1024)

    def stop(self) -> tuple[int, int]:
        self._done.set()
        self.join()
        return self.peak_rss, self.peak_anon


def run_capped(command: list[str], cap: str | None, name: str) -> Run:
    """Run `command`, optionally in a fresh memory cgroup limited to `cap`; measure time and memory."""
    group = CGROUP_ROOT / f"gptoss-bench-{name}-{os.getpid()}" if cap else None
    if group:
        group.mkdir(exist_ok=True)
        (group / "memory.limit_in_bytes").write_text(cap)
    with tempfile.TemporaryFile("w+") as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr,
            preexec_fn=(lambda: (group / "cgroup.procs").write_text(str(os.getpid()))) if group else None,
        )  # fmt: skip
        sampler = _MemorySampler(process.pid)
        sampler.start()
        _, status, _ = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        tail = stderr.read().strip()[-300:]
    result = Run(wall, *sampler.stop(), process.returncode, cap, stderr_tail=tail)
    if group:
        result.cgroup_peak = int((group / "memory.max_usage_in_bytes").read_text())
        result.cgroup_failcnt = int((group / "memory.failcnt").read_text())
        group.rmdir()
    return result


def _build_command(checkpoint: Path, out: Path, target: str, precision: str, capability: str) -> list[str]:
    command = [sys.executable, "-m", "gptoss.exporter", "build", str(checkpoint), "--out", str(out),
               "--precision", precision, "--target", target]  # fmt: skip
    return command + (["--compute-capability", capability] if target != "onnx" else [])


def _gib(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**30:.2f}"


def bench_model(spec: str, args: argparse.Namespace, workdir: Path) -> Iterator[str]:
    """Rows of the table for one `preset[:layers]`, as they are measured."""
    preset, _, layers = spec.partition(":")
    checkpoint = workdir / "checkpoint"
    overrides = {"num_hidden_layers": int(layers)} if layers else {}
    start = time.perf_counter()
    write_hub_model(checkpoint, preset, **overrides)
    write_s = time.perf_counter() - start
    size = directory_bytes(checkpoint)
    cold = args.cold and drop_caches()
    copy = copy_seconds(checkpoint, workdir)
    name = f"{preset}:{layers or 'full'}"
    yield f"{name:<18} {'checkpoint':<18} {write_s:>8.1f} {'':>7} {'':>9} {'':>9} {'':>14} {_gib(size):>10}"
    yield f"{name:<18} {'copy':<18} {copy:>8.1f} {1.0:>7.2f}"
    for target in args.targets:
        out = workdir / f"engine-{target}"
        cap = args.export_cap if target == "onnx" else args.build_cap
        if cold:
            drop_caches()
        run = run_capped(_build_command(checkpoint, out, target, args.precision, args.compute_capability), cap,
                         target)  # fmt: skip
        engine = directory_bytes(out) if run.returncode == 0 else None
        capped = f"{_gib(run.cgroup_peak)}/{cap} f{run.cgroup_failcnt}" if cap else "-"
        row = (
            f"{name:<18} {'build ' + target:<18} {run.wall_s:>8.1f} {run.wall_s / copy:>7.2f} {_gib(run.peak_rss):>9} "
            f"{_gib(run.peak_anon):>9} {capped:>14} {_gib(engine):>10}"
        )
        if engine is None:
            yield row + f"  FAILED ({run.returncode}): {run.stderr_tail.splitlines()[-1:]}"
        else:
            yield row + f"  ({engine / size:.2f}x checkpoint)"
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(checkpoint)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="preset[:layers], repeat (default gpt-oss-20b)")
    parser.add_argument("--targets", nargs="+", default=["onnx", "tensorrt-rtx"])
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--compute-capability", default="sm89", help="TensorRT targets: ahead-of-time GPU")
    parser.add_argument("--export-cap", help="hard memory limit of the ONNX build, e.g. 4G (root, cgroup v1)")
    parser.add_argument("--build-cap", help="hard memory limit of the engine builds, e.g. 16G")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before the copy and each build")
    parser.add_argument("--workdir", type=Path, help="where to write (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep checkpoints and engine directories")
    args = parser.parse_args(argv)
    if (args.export_cap or args.build_cap) and not CGROUP_ROOT.is_dir():
        parser.error(f"--export-cap/--build-cap need the cgroup v1 memory controller at {CGROUP_ROOT}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gptoss-bench-export-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"{'model':<18} {'step':<18} {'wall s':>8} {'x copy':>7} {'RSS GiB':>9} {'anon GiB':>9} "
          f"{'cgroup GiB':>14} {'size GiB':>10}", flush=True)  # fmt: skip
    for spec in args.model or ["gpt-oss-20b"]:
        for row in bench_model(spec, args, workdir):
            print(row, flush=True)


if __name__ == "__main__":
    main()
