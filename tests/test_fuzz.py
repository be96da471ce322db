"""Fuzzing the readers with truncations, byte flips and JSON field mutations: of a sharded checkpoint, through what a
build does before it traces (config, checkpoint checks, weight pieces), and of an engine directory, through
`Engine.load` and one generated token. Every case ends in the right result or a one-line GptOssError naming the
file, within CASE_SECONDS. Cases are seeded by their number, so a failure reproduces alone."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import build_weights, tensor_ranges
from safetensors import safe_open

from gptoss.runtime import Engine
from gptoss.runtime.errors import GptOssError

SEED = 10
CASES = 60
CASE_SECONDS = 5.0
PROMPT = [5, 6, 7]
# Replacements for a JSON field: wrong types, out-of-range and non-finite numbers, paths leading out.
VALUES = [-1, 0, 1, 3, 200, 2**31, 10**400, 1.5, 1e300, 1e-300, float("nan"), float("-inf"), "x", "nan", "../x",
          "/etc/passwd", None, [], {}, True, [1, "a"], {"a": 1}]  # fmt: skip
# Stored bytes a weight element may be set to: NaN and infinities (refused), the largest finite values (not).
POISON = {"BF16": [b"\xc0\x7f", b"\x80\xff", b"\x7f\x7f"], "U8": [b"\xff", b"\xfe"]}


def bounded(call: Callable[..., Any], *args: Any) -> tuple[Any, BaseException | None]:
    """`call(*args)` on a daemon thread: its result and exception; the case fails if it outlasts CASE_SECONDS."""
    outcome: list = [None, None]

    def run() -> None:
        try:
            outcome[0] = call(*args)
        except Exception as exc:  # judged by the caller
            outcome[1] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(CASE_SECONDS)
    assert not thread.is_alive(), f"{call.__name__} still running after {CASE_SECONDS} s"
    return outcome[0], outcome[1]


def assert_one_line(error: BaseException, directory: Path) -> None:
    assert isinstance(error, GptOssError), f"{type(error).__name__}: {error}"
    assert "\n" not in str(error) and str(directory) in str(error), str(error)


def key_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """The path of every field inside a JSON value."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [path for key, item in items for path in [(*prefix, key), *key_paths(item, (*prefix, key))]]


def mutate(rng: np.random.Generator, directory: Path, files: list[str], json_files: list[str]) -> str:
    """Truncate one of `files`, flip one of its bytes, or set a field of one of `json_files` to one of VALUES."""
    kind = rng.choice(["truncate", "flip", "json"])
    path = directory / (rng.choice(json_files) if kind == "json" else rng.choice(files))
    data = bytearray(path.read_bytes())
    if kind == "truncate":
        del data[rng.integers(len(data)) :]
    elif kind == "flip":
        data[rng.integers(len(data))] ^= int(rng.integers(1, 256))
    else:
        document = json.loads(data)
        paths = key_paths(document)
        *parents, last = paths[rng.integers(len(paths))]
        target = document
        for key in parents:
            target = target[key]
        target[last] = VALUES[rng.integers(len(VALUES))]
        data = json.dumps(document).encode()
    path.write_bytes(data)
    return f"{kind} {path.name}"


# ------------------------------------------------------------------ checkpoints


def poison(rng: np.random.Generator, checkpoint: Path) -> str:
    """Set one element of one tensor to a NaN or infinity, or to a largest finite value, in its stored form."""
    shard = rng.choice(sorted(p.name for p in checkpoint.glob("*.safetensors")))
    ranges = tensor_ranges(checkpoint / shard)
    tensor = rng.choice(sorted(ranges))
    dtype, begin, end = ranges[tensor]
    value = POISON[dtype][rng.integers(len(POISON[dtype]))]
    with open(checkpoint / shard, "r+b") as handle:
        handle.seek(begin + int(rng.integers((end - begin) // len(value))) * len(value))
        handle.write(value)
    return f"poison {tensor} with {value!r}"


def not_finite(checkpoint: Path) -> set[str] | None:
    """The tensors of the checkpoint's shards that hold NaN or infinity (or an E8M0 scale 0xFF), as safetensors
    itself reads them; None if it cannot read them."""
    found = set()
    try:
        for shard in checkpoint.glob("*.safetensors"):
            with safe_open(str(shard), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118  (safe_open has no __iter__)
                    tensor = handle.get_tensor(name)
                    if name.endswith("_scales"):
                        bad = (tensor == 255).any()
                    else:
                        bad = tensor.is_floating_point() and not torch.isfinite(tensor).all()
                    if bad:
                        found.add(name)
    except Exception:  # unreadable: the reader under test must have failed
        return None
    return found


@pytest.fixture(scope="module")
def sharded(checkpoint_factory) -> Path:
    return checkpoint_factory("demo", expert_format="mxfp4", shards=2)


@pytest.mark.parametrize("case", range(CASES))
def test_checkpoint_reader(sharded, tmp_path, case):
    rng = np.random.default_rng([SEED, case])
    checkpoint = Path(shutil.copytree(sharded, tmp_path / "checkpoint"))
    shards = sorted(p.name for p in checkpoint.glob("*.safetensors"))
    files = ["config.json", "model.safetensors.index.json", *shards]
    done = poison(rng, checkpoint) if rng.random() < 0.25 else mutate(rng, checkpoint, files, files[:2])
    dtype = (torch.float32, torch.bfloat16, torch.float16)[rng.integers(3)]
    _, error = bounded(build_weights, checkpoint, tmp_path / "model.onnx.data", dtype)
    bad = not_finite(checkpoint)
    if error is None:
        assert bad == set(), f"{done}: built from non-finite weights {bad}"
        return
    assert_one_line(error, checkpoint)
    if "expected finite values" in str(error):
        assert bad is None or str(error).split("'")[1] in bad, f"{done}: {error}"


# ------------------------------------------------------------------ engine directories


def generate(engine: Engine) -> list[int]:
    return engine.generate(PROMPT, max_new_tokens=1, stop=[])[0].token_ids


@pytest.fixture(scope="module")
def expected_token(small_engine) -> list[int]:
    return generate(Engine.load(small_engine))


@pytest.mark.parametrize("case", range(CASES))
def test_engine_reader(small_engine, expected_token, tmp_path, case):
    rng = np.random.default_rng([SEED, CASES + case])
    engine_dir = Path(shutil.copytree(small_engine, tmp_path / "engine"))
    files = sorted(p.name for p in engine_dir.iterdir())
    manifest_only = rng.random() < 0.75  # the manifest, mostly; any file otherwise
    mutate(rng, engine_dir, ["manifest.json"] if manifest_only else files, ["manifest.json"])
    engine, error = bounded(Engine.load, engine_dir)
    if error is not None:
        assert_one_line(error, engine_dir)
        return
    tokens, error = bounded(generate, engine)
    if error is not None:  # a manifest may be valid and still too small for the prompt
        assert isinstance(error, GptOssError) and "\n" not in str(error), f"{type(error).__name__}: {error}"
    else:
        assert tokens == expected_token
