"""Write safetensors checkpoints tensor by tensor: one file or shards with their index, in bounded memory.

Each tensor is planned (name, dtype, shape) before any data exists, so every file's header is written first
and the data follows in pieces made on a thread pool: memory holds a few pieces, never a whole shard. Files go
into a hidden directory beside the target, renamed onto it only when everything is written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from gptoss.exporter.checkpoint import INDEX_FILE, SAFETENSORS_DTYPES, SINGLE_FILE
from gptoss.exporter.errors import CheckpointError
from gptoss.exporter.progress import ByteProgress
from gptoss.exporter.tensor_stream import PlannedTensor, made_in_order

_HEADER_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


def shard_files(count: int, zero_based: bool) -> list[str]:
    """Shard file names: `model-00001-of-00003` as transformers' `save_pretrained` numbers them, or
    `model-00000-of-00002` as the gpt-oss hub checkpoints do (numbered from 0, "of" the last index)."""
    if zero_based:
        return [f"model-{i:05d}-of-{count - 1:05d}.safetensors" for i in range(count)]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def split_by_size(tensors: Sequence[PlannedTensor], count: int) -> list[list[PlannedTensor]]:
    """At most `count` contiguous groups of about equal bytes, in order (a tensor goes to the group its middle
    byte falls in; groups left empty by large tensors are dropped)."""
    total = sum(t.nbytes for t in tensors)
    groups: list[list[PlannedTensor]] = [[] for _ in range(count)]
    done = 0
    for tensor in tensors:
        groups[min(count - 1, (2 * done + tensor.nbytes) * count // max(2 * total, 1))].append(tensor)
        done += tensor.nbytes
    return [group for group in groups if group]


def write_shards(
    directory: Path, groups: Sequence[Sequence[PlannedTensor]], files: Sequence[str], workers: int | None = None
) -> None:
    """Write each group of tensors into its file in `directory`, plus the index unless the only file is
    `model.safetensors`; logs bytes written, rate and time left."""
    progress = ByteProgress("weights", sum(t.nbytes for group in groups for t in group))
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        for group, file in zip(groups, files, strict=True):
            _write_file(directory / file, made_in_order(pool, group, 2 * workers), group, progress)
    progress.finish()
    if list(files) != [SINGLE_FILE]:
        weight_map = {t.name: file for group, file in zip(groups, files, strict=True) for t in group}
        index = {"metadata": {"total_size": progress.total}, "weight_map": dict(sorted(weight_map.items()))}
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def _write_file(
    path: Path,
    pieces: Iterator[tuple[PlannedTensor, memoryview]],
    tensors: Sequence[PlannedTensor],
    progress: ByteProgress,
) -> None:
    """One safetensors file: the header from the plan, then each tensor's pieces as they are made."""
    with open(path, "wb") as file:
        size = _write_header(file, tensors)
        for _, piece in pieces:
            file.write(piece)
            progress.advance(piece.nbytes)
        if file.tell() != size:
            raise CheckpointError(f"{path}: wrote {file.tell()} bytes, the header promises {size}")


def _write_header(file: BinaryIO, tensors: Sequence[PlannedTensor]) -> int:
    """Write the safetensors header of `tensors` (stored in this order); returns the file's final size."""
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor in tensors:
        end = offset + tensor.nbytes
        header[tensor.name] = {
            "dtype": _HEADER_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned, as safetensors writes it
    file.write(len(encoded).to_bytes(8, "little") + encoded)
    return 8 + len(encoded) + offset


@contextmanager
def staged_directory(out_dir: str | Path) -> Iterator[Path]:
    """A hidden directory beside `out_dir`, renamed onto it (replacing it) when the block succeeds and removed
    when it fails, so an interrupted write leaves nothing that looks finished."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o755)
    try:
        yield staging
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
