"""The peers `bench` runs side by side with our engine, each in a process of its own (`peer_worker.py`):
Hugging Face transformers with this environment's Python, and ONNX Runtime GenAI in a virtual environment of its
own, created on first use, because `onnxruntime-genai` brings an `onnxruntime` that would replace our
`onnxruntime-gpu`. GenAI runs what its own model builder makes of the checkpoint (`-p int4 -e cpu`: experts and
lm_head re-quantized to int4), built once per checkpoint and kept next to that environment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np

from gptoss.runtime import GptOssError

log = logging.getLogger(__name__)

PEERS = ("huggingface", "ort-genai")
GENAI_VERSION = "0.18.0"
# What its model builder imports: torch (the CPU wheel of our own pin), transformers (MXFP4 checkpoints need
# accelerate), onnx and onnx-ir.
GENAI_REQUIREMENTS = (
    f"onnxruntime-genai=={GENAI_VERSION}", "torch==2.13.0", "transformers==5.24.0", "accelerate", "onnx", "onnx-ir",
)  # fmt: skip
WORKER = Path(__file__).with_name("peer_worker.py")


def peers_dir() -> Path:
    """Where the peers' environments and built models live (`GPTOSS_PEERS_DIR`, else the user's cache)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gptoss-export" / "peers"
    return Path(os.environ.get("GPTOSS_PEERS_DIR", default))


def genai_python() -> Path:
    """The Python of ONNX Runtime GenAI's virtual environment, created (minutes, once) when missing or unfinished."""
    root = peers_dir() / f"ort-genai-{GENAI_VERSION}"
    python, done = root / "bin" / "python", root / ".installed"
    if done.is_file():
        return python
    shutil.rmtree(root, ignore_errors=True)  # an unfinished one from an interrupted run
    log.info("creating ONNX Runtime GenAI %s's virtual environment in %s (once, a few minutes)", GENAI_VERSION, root)
    venv.EnvBuilder(with_pip=True).create(root)
    _run([python, "-m", "pip", "install", "--quiet", *GENAI_REQUIREMENTS], root.with_suffix(".log"), "pip install")
    done.touch()
    return python


def genai_model(checkpoint: Path) -> Path:
    """GenAI's model of `checkpoint` from its own builder, built on first use (once per checkpoint version)."""
    models = peers_dir() / f"ort-genai-{GENAI_VERSION}" / "models"
    target = models / _checkpoint_key(checkpoint)
    if (target / "genai_config.json").is_file():
        return target
    python = genai_python()
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    log.info("building ONNX Runtime GenAI's int4 CPU model of %s into %s", checkpoint, target)
    command = [python, "-m", "onnxruntime_genai.models.builder", "-i", checkpoint, "-o", partial]
    _run([*command, "-p", "int4", "-e", "cpu", "-c", partial / "cache"], target.with_suffix(".log"), "model builder")
    shutil.rmtree(partial / "cache", ignore_errors=True)
    partial.rename(target)
    return target


def measure(peer: str, checkpoint: Path, prompts: list[np.ndarray], new_tokens: int) -> list[dict[str, float]]:
    """`peer`'s times and peak memory for each batch of `prompts`, from one process of its own."""
    if peer == "huggingface":
        python, model = Path(sys.executable), checkpoint
    else:
        python, model = genai_python(), genai_model(checkpoint)
    runs = [{"prompts": batch.tolist(), "new_tokens": new_tokens} for batch in prompts]
    job = {"runtime": peer, "model": str(model), "runs": runs}
    done = subprocess.run(
        [python, WORKER], input=json.dumps(job), capture_output=True, text=True, env=_single_runtime_env()
    )  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise GptOssError(f"{peer} benchmark failed (exit {done.returncode}): {last}")
    timings = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if len(timings) != len(prompts):
        raise GptOssError(f"{peer} benchmark printed {len(timings)} results for {len(prompts)} batch sizes")
    return timings


def _checkpoint_key(checkpoint: Path) -> str:
    """Names a checkpoint version: its path, config and its weight files' sizes and modification times."""
    digest = hashlib.sha256(str(checkpoint.resolve()).encode())
    digest.update((checkpoint / "config.json").read_bytes())
    for weights in sorted(checkpoint.glob("*.safetensors")):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _single_runtime_env() -> dict[str, str]:
    """This environment without our virtual environment's paths, so a peer's Python imports only its own packages."""
    return {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _run(command: list, log_file: Path, what: str) -> None:
    """Runs a set-up step with its output in `log_file`; a failure is one line naming that log."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as out:
        done = subprocess.run([str(part) for part in command], stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise GptOssError(f"ONNX Runtime GenAI's {what} failed (exit {done.returncode}); its output: {log_file}")
