"""`manifest.json` of an engine directory: what was built, its I/O contract, and file checksums.

The runtime reads every name and shape from here, never from guesses (docs/engine-directory.md). Reading it
imports no torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptoss.exporter.config import GptOssConfig

from .contract import CONTRACT_VERSION, GraphIO
from .errors import GptOssError

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
    tokenizer: str | None = None
    chat_format: str | None = None
    ops: dict[str, Any] = field(default_factory=dict)
    target_info: dict[str, Any] = field(default_factory=dict)
    source_checkpoint: str | None = None
    contract_version: int = CONTRACT_VERSION

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("engine_dir", "config", "io")}
        return {"config": self.config.to_dict(), **self.io.to_json(), **data}

    def path(self, role: str) -> Path:
        """Path of the file registered under `role` (e.g. 'onnx', 'onnx_data', 'engine')."""
        if role not in self.files:
            raise ManifestError(f"{self.engine_dir / MANIFEST}: no {role!r} file listed (target {self.target})")
        return self.engine_dir / self.files[role]["name"]

    def verify_files(self, check_hashes: bool = True) -> None:
        """Check that every listed file exists with its recorded size (and sha256)."""
        for role, entry in self.files.items():
            path = self.engine_dir / entry["name"]
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


def read_manifest(engine_dir: str | Path) -> Manifest:
    """Load and validate `engine_dir/manifest.json` (structure and contract version; not the files)."""
    engine_dir = Path(engine_dir)
    path = engine_dir / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path}: not found (is {engine_dir} an engine directory from gptoss-export build?)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    version = data.get("contract_version")
    if version != CONTRACT_VERSION:
        raise ManifestError(f"{path}: I/O contract version {version!r}, this runtime reads {CONTRACT_VERSION}")
    if data.get("target") not in TARGETS:
        raise ManifestError(f"{path}: target {data.get('target')!r}, expected one of {', '.join(TARGETS)}")
    try:
        config = GptOssConfig.from_dict(data.pop("config"), source=f"{path}: config")
        io = GraphIO.from_json(data.pop("inputs"), data.pop("outputs"))
        return Manifest(engine_dir=engine_dir, config=config, io=io, **data)
    except (TypeError, KeyError, AttributeError) as exc:
        raise ManifestError(f"{path}: missing or unexpected field ({exc})") from None
