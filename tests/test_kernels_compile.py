"""Compile checks of the CUDA kernels, no GPU needed: every plugins/*/*.cu (each op's kernel in its folder, the shared
ones in plugins/common) builds with nvcc for sm_80, sm_86, sm_89 and sm_90 with warnings as errors and prints no
warning, and no decode kernel spills registers.

Each file is one nvcc call with all four -gencode targets and `-Xptxas -v`; the files compile in parallel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGINS = REPO / "plugins"
KERNELS = sorted(PLUGINS.glob("*/*.cu"))
ARCHS = ("80", "86", "89", "90")
# The flags of plugins/CMakeLists.txt (GPTOSS_CUDA_WARNINGS).
WARNING_FLAGS = ("--Werror", "all-warnings", "-Xcompiler=-Wall,-Wextra,-Werror")

ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def nvcc_command(nvcc: str, source: Path, output: Path) -> list[str]:
    gencode = [f"-gencode=arch=compute_{arch},code=sm_{arch}" for arch in ARCHS]
    # The include directories of plugins/CMakeLists.txt: plugins/ ("common/kernel_common.cuh") and plugins/include.
    includes = [f"-I{PLUGINS}", f"-I{PLUGINS / 'include'}"]
    return [nvcc, "-c", str(source), "-o", str(output), "-std=c++17", "-Xcompiler=-fPIC", *includes,
            *gencode, *WARNING_FLAGS, "-Xptxas", "-v"]  # fmt: skip


def spills(ptxas_log: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(mangled kernel, sm_XX) -> (spill store bytes, spill load bytes), from `ptxas -v` output."""
    result, entry = {}, None
    for line in ptxas_log.splitlines():
        if match := ENTRY.search(line):
            entry = match.groups()
        elif (match := SPILLS.search(line)) and entry is not None:
            result[entry] = (int(match[1]), int(match[2]))
            entry = None
    return result


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    """nvcc result (stdout + stderr merged) of every kernel file, by file name."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        reason = "nvcc is not on PATH: the CUDA kernels cannot be compiled here"
        print(reason)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("kernels")

    def build(source: Path) -> subprocess.CompletedProcess:
        command = nvcc_command(nvcc, source, out / f"{source.stem}.o")
        return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return {source.name: result for source, result in zip(KERNELS, pool.map(build, KERNELS), strict=True)}


def test_kernel_sources_exist() -> None:
    assert {"sink_attention.cu", "moe.cu"} <= {source.name for source in KERNELS}


@pytest.mark.parametrize("source", [source.name for source in KERNELS])
def test_compiles_without_warnings(builds: dict[str, subprocess.CompletedProcess], source: str) -> None:
    result = builds[source]
    assert result.returncode == 0, f"nvcc failed on {source}:\n{result.stdout}"
    warnings = [line for line in result.stdout.splitlines() if "warning" in line.lower()]
    assert not warnings, f"{source} compiles with warnings:\n" + "\n".join(warnings)


def test_decode_kernels_do_not_spill(builds: dict[str, subprocess.CompletedProcess]) -> None:
    decode = {
        (name, arch): counts
        for result in builds.values()
        for (name, arch), counts in spills(result.stdout).items()
        if "decode" in name
    }
    # The attention and MoE decode kernels exist for every target (else this test would pass vacuously).
    for family in ("sink_attention_decode", "moe_gate_up_decode", "moe_down_decode"):
        assert {arch for name, arch in decode if family in name} == {f"sm_{arch}" for arch in ARCHS}, family
    spilling = {key: counts for key, counts in decode.items() if counts != (0, 0)}
    assert not spilling, f"decode kernels spill (stores, loads bytes): {spilling}"
