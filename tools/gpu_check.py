"""`make gpu-check`: what a GPU machine can prove about the kernels, in one command.

For a machine with an NVIDIA driver, nvcc, cmake, a CUDA build of torch and transformers (the oracle), and neither
TensorRT nor a network. In order:
1. build `libgptoss_kernels.so` for this GPU;
2. run the kernel tests on it (`pytest -m gpu`);
3. check the `cuda` backend (the PyTorch model on our kernels) against Hugging Face: the demo model (greedy tokens
   equal for 48 tokens, logits within 1e-4 in float32), and a model at gpt-oss-20b layer dimensions with two layers
   (greedy tokens equal for 16 tokens, logits within 1e-4 of each position's largest logit);
4. time each decode kernel against a device-to-device copy (`tools/bench_kernels.py`);
5. time end-to-end decode at full gpt-oss-20b dimensions, batch 1 and 8 (`tools/bench_decode.py`).
It prints one summary table, writes it with every measurement to `<out>/summary.json`, and exits 1 when a check
failed. Without a GPU it exits at once, with status 2 and one line saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gptoss.tools import kernels

REPO_ROOT = kernels.REPO_ROOT
GPU_TESTS = ["tests/test_kernels.py"]
# float32 on both sides: the kernels and Hugging Face differ in summation order and exp2 versus exp only, ~1e-6 of
# the logits' magnitude (up to ~10 here), so 1e-4 leaves a wide margin and still catches any real error.
LOGIT_TOLERANCE = 1e-4


@dataclass
class Check:
    name: str
    passed: bool
    summary: str
    seconds: float
    details: Any = None


def build_kernels(out: Path) -> tuple[bool, str, Any]:
    """Configure and build the kernel library for this GPU's architecture; later checks use it."""
    import torch

    major, minor = torch.cuda.get_device_capability()
    build = out / "kernels"
    _run(["cmake", "-S", str(REPO_ROOT / "plugins"), "-B", str(build), f"-DCMAKE_CUDA_ARCHITECTURES={major}{minor}",
          "--log-level=WARNING"])  # fmt: skip
    _run(["cmake", "--build", str(build), "--target", "gptoss_kernels", "-j", str(os.cpu_count() or 4)])
    library = build / "libgptoss_kernels.so"
    os.environ[kernels.LIBRARY_ENV] = str(library)
    return True, f"sm_{major}{minor}, kernels {kernels.version()}", {"library": str(library)}


def kernel_tests(out: Path) -> tuple[bool, str, Any]:
    """The kernel tests against the reference ops, on this GPU."""
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *GPU_TESTS]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    (out / "pytest-gpu.log").write_text(result.stdout + result.stderr)
    lines = (result.stdout.strip().splitlines() or [result.stderr.strip() or "no output"])
    return result.returncode == 0, lines[-1].strip("= "), {"log": str(out / "pytest-gpu.log")}


def backend_vs_hf_demo(out: Path) -> tuple[bool, str, Any]:
    """The demo model (MXFP4 experts, float32) through the cuda backend against Hugging Face."""
    from gptoss.tools.demo_model import write_demo_model

    checkpoint = write_demo_model(out / "demo", expert_format="mxfp4")
    return _against_hf(checkpoint, greedy_tokens=48, relative=False)


def backend_vs_hf_20b_layers(out: Path) -> tuple[bool, str, Any]:
    """Two layers at gpt-oss-20b dimensions (hub layout, MXFP4, float32) through the cuda backend against HF."""
    from gptoss.tools.demo_model import write_hub_model

    checkpoint = out / "gpt-oss-20b-2-layers"
    if not (checkpoint / "config.json").is_file():
        write_hub_model(checkpoint, "gpt-oss-20b", num_hidden_layers=2)
    return _against_hf(checkpoint, greedy_tokens=16, relative=True, prompts=["Hello world!"])


def _against_hf(checkpoint: Path, greedy_tokens: int, relative: bool, prompts: list[str] | None = None) -> tuple:
    from gptoss.tools.compare import compare

    report = compare(checkpoint, checkpoint, backend="cuda", use_hf=True, greedy_tokens=greedy_tokens,
                     prompts=prompts, reference_device="cuda", per_layer=False)  # fmt: skip
    error = report.max_rel_error if relative else report.max_abs_error
    passed = report.greedy_identical and report.top1_agreement == 1.0 and error <= LOGIT_TOLERANCE
    summary = (f"max {'rel' if relative else 'abs'} err {error:.2e}, top-1 {report.top1_agreement:.3f}, "
               f"greedy {greedy_tokens} identical: {report.greedy_identical}")  # fmt: skip
    return passed, summary, asdict(report)


def kernel_bandwidth(out: Path) -> tuple[bool, str, Any]:
    """Each decode kernel's bandwidth as a fraction of a device-to-device copy of as many bytes."""
    from gptoss.tools import bench_kernels

    rows = list(bench_kernels.run([1, 8], calls=20))
    print(bench_kernels.HEADER, *(row.line() for row in rows), sep="\n")
    in_memory = [row.ratio for row in rows if not row.in_l2] or [row.ratio for row in rows]
    summary = f"{len(rows)} cases, ratio to copy {min(in_memory):.2f} to {max(in_memory):.2f} (outside L2)"
    return True, summary, [asdict(row) | {"ratio": row.ratio} for row in rows]


def decode_20b(out: Path) -> tuple[bool, str, Any]:
    """End-to-end decode at full gpt-oss-20b dimensions, random weights made on the GPU."""
    from gptoss.tools import bench_decode

    results = bench_decode.run("gpt-oss-20b", None, [1, 8], prompt_len=128, new_tokens=64)
    print(bench_decode.HEADER, *(r.line() for r in results), sep="\n")
    summary = ", ".join(f"batch {r.batch}: {r.tokens_per_s:.0f} tok/s ({r.ratio:.2f} of limit)" for r in results)
    return True, summary, [r.to_json() for r in results]


CHECKS: list[Callable[[Path], tuple[bool, str, Any]]] = [
    build_kernels, kernel_tests, backend_vs_hf_demo, backend_vs_hf_20b_layers, kernel_bandwidth, decode_20b,
]  # fmt: skip


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(command[:2])} failed: {' | '.join(tail)}")


def run_checks(out: Path, selected: list[Callable[[Path], tuple[bool, str, Any]]]) -> list[Check]:
    """The selected checks in order; one that raises fails with its error, and the later ones still run (those that
    need the kernel library fail with it when it did not build)."""
    checks = []
    for check in selected:
        name = check.__name__
        print(f"--- {name}: {check.__doc__.splitlines()[0]}", flush=True)
        start = time.perf_counter()
        try:
            passed, summary, details = check(out)
        except Exception as error:  # a failed check is reported, not raised
            passed, summary, details = False, f"{type(error).__name__}: {' '.join(str(error).split())}"[:300], None
        checks.append(Check(name, passed, summary, time.perf_counter() - start, details))
        print(f"    {'PASS' if passed else 'FAIL'} {summary}", flush=True)
        _release_gpu_memory()
    return checks


def _release_gpu_memory() -> None:
    """Free what the last check's models held, so the next one has the whole GPU."""
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()


def environment() -> dict[str, str]:
    import torch

    return {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "python": platform.python_version(),
        "commit": _commit(),
    }


def _commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  result  {'seconds':>7}  summary"]
    lines += [f"{c.name:<{width}}  {'PASS' if c.passed else 'FAIL':<6}  {c.seconds:>7.1f}  {c.summary}" for c in checks]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "gpu-check", help="work and report folder")
    parser.add_argument("--only", nargs="+", choices=[c.__name__ for c in CHECKS], help="run only these checks")
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:
        print(f"gpu-check: {sys.executable} has no torch; run it with the Python of a CUDA build of torch "
              f"(make gpu-check GPU_PYTHON=...)", file=sys.stderr)  # fmt: skip
        return 2
    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA GPU visible to torch {torch.__version__} (torch.cuda.is_available() is False); "
              f"nothing was checked", file=sys.stderr)  # fmt: skip
        return 2
    selected = [c for c in CHECKS if not args.only or c.__name__ in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = environment()
    print(" ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    checks = run_checks(args.out, selected)
    summary = {**env, "seconds": time.perf_counter() - start, "checks": [asdict(c) for c in checks]}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\n{table(checks)}\n\n{' '.join(f'{k} {v}' for k, v in env.items())}, {summary['seconds']:.0f} s; "
          f"details in {args.out / 'summary.json'}")  # fmt: skip
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
