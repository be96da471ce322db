"""`manifest.json` of an engine directory: what was built, its I/O contract, and file checksums.

The runtime reads every name and shape from here, never from guesses (docs/engine-directory.md). Reading it
imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any, NamedTuple

from gptoss.exporter.config import GptOssConfig, is_int32

from .contract import ACCURACY_OUTPUTS, CONTRACT_VERSION, HEADS, PRECISIONS, GraphIO, graph_io
from .errors import GptOssError
from .files import confined, read_json

MANIFEST = "manifest.json"
TARGETS = ("onnx", "tensorrt", "tensorrt-rtx")


class ManifestError(GptOssError):
    """The manifest or a file it lists is missing, malformed or altered."""


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    """Hex sha256 of a file, read in 16 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Manifest:
    """The parsed manifest of one engine directory."""

    engine_dir: Path
    target: str
    head: str
    precision: str
    config: GptOssConfig
    io: GraphIO
    files: dict[str, dict]
    max_batch: int
    max_seq_len: int
    all_positions: bool = False
    accuracy_outputs: list[str] = field(default_factory=list)  # kinds of per-layer outputs (contract.ACCURACY_OUTPUTS)
    tokenizer: str | None = None
    chat_format: str | None = None
    ops: dict[str, Any] = field(default_factory=dict)
    target_info: dict[str, Any] = field(default_factory=dict)
    source_checkpoint: str | None = None
    contract_version: int = CONTRACT_VERSION

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("engine_dir", "config", "io")}
        return {"config": self.config.to_dict(), **self.io.to_json(), **data}

    def dumps(self) -> str:
        """The text of `manifest.json`: strict JSON, so a NaN or infinity is an error rather than a bad file."""
        try:
            return json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n"
        except ValueError as exc:
            raise ManifestError(f"{self.engine_dir / MANIFEST}: cannot be written ({exc})") from None

    def path(self, role: str) -> Path:
        """Path of the file registered under `role` (e.g. 'onnx', 'onnx_data', 'engine'), inside the directory."""
        if role not in self.files:
            raise ManifestError(f"{self.engine_dir / MANIFEST}: no {role!r} file listed (target {self.target})")
        where = f"{self.engine_dir / MANIFEST}: files.{role}.name"
        return confined(self.engine_dir, self.files[role]["name"], ManifestError, where)

    def tokenizer_path(self) -> Path | None:
        """Path of the tokenizer file inside the directory, or None when the engine has none."""
        if self.tokenizer is None:
            return None
        return confined(self.engine_dir, self.tokenizer, ManifestError, f"{self.engine_dir / MANIFEST}: tokenizer")

    def verify_files(self, check_hashes: bool = True) -> None:
        """Check that every listed file exists with its recorded size (and sha256)."""
        for role, entry in self.files.items():
            path = self.path(role)
            if not path.is_file():
                raise ManifestError(f"{path}: missing ({role} file listed in {MANIFEST})")
            if path.stat().st_size != entry["size"]:
                raise ManifestError(
                    f"{path}: size {path.stat().st_size} differs from the {entry['size']} bytes in {MANIFEST}"
                )
            if check_hashes and sha256_file(path) != entry["sha256"]:
                raise ManifestError(f"{path}: sha256 differs from {MANIFEST} (file altered after the build)")


def file_entry(path: Path) -> dict[str, Any]:
    return {"name": path.name, "size": path.stat().st_size, "sha256": sha256_file(path)}


class _Field(NamedTuple):
    """What a manifest field must hold: a test of its JSON value, described by `expected`."""

    ok: Callable[[Any], bool]
    expected: str
    required: bool = True


def _of_type(*types: type) -> Callable[[Any], bool]:
    return lambda value: type(value) in types  # exact: JSON true is no integer here


def _positive_int(value: Any) -> bool:
    return is_int32(value) and value > 0


def _is_sha256(value: Any) -> bool:
    return type(value) is str and re.fullmatch("[0-9a-f]{64}", value) is not None


def _one_of(choices: tuple[str, ...] | dict[str, Any]) -> _Field:
    return _Field(lambda value: type(value) is str and value in choices, f"one of {', '.join(choices)}")


# Every field but `contract_version` and `target`, which `read_manifest` checks first.
_FIELDS = {
    "head": _one_of(HEADS),
    "precision": _one_of(PRECISIONS),
    "config": _Field(_of_type(dict), "an object"),
    "inputs": _Field(_of_type(dict), "an object"),
    "outputs": _Field(_of_type(dict), "an object"),
    "files": _Field(lambda value: type(value) is dict and bool(value), "a non-empty object of file entries"),
    "max_batch": _Field(_positive_int, "a positive integer (int32)"),
    "max_seq_len": _Field(_positive_int, "a positive integer (int32)"),
    "all_positions": _Field(_of_type(bool), "true or false", required=False),
    "accuracy_outputs": _Field(
        lambda value: type(value) is list and all(kind in ACCURACY_OUTPUTS for kind in value)
        and len(set(value)) == len(value),
        f"a list of distinct kinds among {', '.join(ACCURACY_OUTPUTS)}",
        required=False,
    ),
    "tokenizer": _Field(_of_type(str, type(None)), "a file name or null", required=False),
    "chat_format": _Field(_of_type(str, type(None)), "a string or null", required=False),
    "ops": _Field(_of_type(dict), "an object", required=False),
    "target_info": _Field(_of_type(dict), "an object", required=False),
    "source_checkpoint": _Field(_of_type(str, type(None)), "a path or null", required=False),
}
_FILE_FIELDS = {
    "name": _Field(_of_type(str), "a file name"),  # and one inside the directory: `Manifest.path`
    "size": _Field(lambda value: type(value) is int and value >= 0, "a non-negative integer"),
    "sha256": _Field(_is_sha256, "64 lowercase hex digits"),
}


def _check_fields(data: dict[str, Any], table: dict[str, _Field], where: str, known: tuple[str, ...] = ()) -> None:
    """Every key of `data` known, every required one present, and each value passing its test."""
    unexpected = [key for key in data if key not in table and key not in known]
    missing = [key for key, spec in table.items() if spec.required and key not in data]
    if unexpected or missing:
        raise ManifestError(f"{where}: missing or unexpected field ({', '.join(missing + unexpected)})")
    for key, value in data.items():
        if key in table and not table[key].ok(value):
            raise ManifestError(f"{where}: {key} must be {table[key].expected}, got {value!r}")


def _io_mismatch(io: GraphIO, expected: GraphIO) -> str | None:
    """The first input or output, in graph order, whose name, shape or dtype is not the contract's."""
    for group in ("inputs", "outputs"):
        for ours, theirs in zip_longest(getattr(io, group).items(), getattr(expected, group).items()):
            if ours != theirs:
                return f"{group[:-1]} {(ours or theirs)[0]!r}"
    return None


def read_manifest(engine_dir: str | Path) -> Manifest:
    """Load and validate `engine_dir/manifest.json`: structure, field types, contract version, I/O against the
    contract, and file names inside the directory (not the files themselves)."""
    engine_dir = Path(engine_dir)
    path = engine_dir / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path}: not found (is {engine_dir} an engine directory from gptoss-export build?)")
    data = read_json(path, ManifestError)
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    version = data.get("contract_version")
    if type(version) is not int or version != CONTRACT_VERSION:
        raise ManifestError(f"{path}: I/O contract version {version!r}, this runtime reads {CONTRACT_VERSION}")
    if data.get("target") not in TARGETS:
        raise ManifestError(f"{path}: target {data.get('target')!r}, expected one of {', '.join(TARGETS)}")
    _check_fields(data, _FIELDS, str(path), known=("contract_version", "target"))
    for role, entry in data["files"].items():
        if type(entry) is not dict:
            raise ManifestError(f"{path}: files.{role} must be an object with name, size and sha256, got {entry!r}")
        _check_fields(entry, _FILE_FIELDS, f"{path}: files.{role}")
    try:
        config = GptOssConfig.from_dict(data.pop("config"), source=f"{path}: config")
        io = GraphIO.from_json(data.pop("inputs"), data.pop("outputs"))
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise ManifestError(f"{path}: malformed config, inputs or outputs ({exc!r})") from None
    manifest = Manifest(engine_dir=engine_dir, config=config, io=io, **data)
    expected = graph_io(
        config, manifest.head, manifest.all_positions, manifest.precision, tuple(manifest.accuracy_outputs)
    )
    mismatch = _io_mismatch(io, expected)
    if mismatch:
        raise ManifestError(f"{path}: {mismatch} differs from the graph contract of this config, head and precision")
    if manifest.max_seq_len > config.max_position_embeddings:
        raise ManifestError(f"{path}: max_seq_len {manifest.max_seq_len} exceeds the config's "
                            f"max_position_embeddings {config.max_position_embeddings}")  # fmt: skip
    for role in manifest.files:
        manifest.path(role)
    manifest.tokenizer_path()
    return manifest
