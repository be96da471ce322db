"""The external weights of an ONNX file, mapped read-only from its data file and handed to TensorRT by address.

TensorRT's ONNX parser (at build) and its ONNX refitter (at load of a weight-stripped plan) accept user-provided
initializers (`load_initializer(name, address, size)`). Handing them pages of a read-only mapping of
`model.onnx.data` means the weights are never copied into the process: they stay file-backed page cache, which
the kernel can drop and read again, so the resident memory of a build does not hold a second copy of them.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GptOssError
from .files import confined


@dataclass(frozen=True)
class ExternalInitializer:
    name: str
    location: str
    offset: int
    length: int
    data_type: int  # onnx.TensorProto data type


def external_initializers(model: Any) -> list[ExternalInitializer]:
    """The initializers of an `onnx.ModelProto` whose data lives in an external file."""
    import onnx

    found = []
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        offset, length = int(info.get("offset", 0)), int(info["length"])
        found.append(ExternalInitializer(tensor.name, info["location"], offset, length, tensor.data_type))
    return found


class MappedWeights:
    """Mappings of the data files an ONNX model's external initializers live in (in `directory`): read-only, or
    copy-on-write (`access=mmap.ACCESS_COPY`) for users such as torch that want writable buffers; the files are never
    written either way."""

    def __init__(
        self, directory: Path, initializers: list[ExternalInitializer], access: int = mmap.ACCESS_READ
    ) -> None:
        self.initializers = initializers
        self._maps: dict[str, tuple[mmap.mmap, np.ndarray]] = {}
        for location in sorted({i.location for i in initializers}):
            path = confined(directory, location, GptOssError, f"{directory}: external data location")
            try:
                with open(path, "rb") as handle:
                    mapping = mmap.mmap(handle.fileno(), 0, access=access)
            except (OSError, ValueError) as exc:
                raise GptOssError(f"{path}: cannot map the weights ({exc})") from None
            self._maps[location] = (mapping, np.frombuffer(mapping, dtype=np.uint8))
        for item in initializers:
            size = self._maps[item.location][0].size()
            if item.offset + item.length > size:
                raise GptOssError(
                    f"{directory / item.location}: initializer {item.name} ends at byte {item.offset + item.length}, "
                    f"the file has {size}"
                )

    def mapping(self, location: str) -> mmap.mmap:
        """The mapping of data file `location` (bounds of every initializer in it already checked)."""
        return self._maps[location][0]

    def addresses(self) -> Iterator[tuple[str, int, int]]:
        """(name, address, size) of each initializer; valid until `close()`."""
        for item in self.initializers:
            base = self._maps[item.location][1].ctypes.data
            yield item.name, base + item.offset, item.length

    def load_into(self, loader: Any, what: str) -> None:
        """Give every initializer to a TensorRT parser or refitter (`loader.load_initializer`)."""
        for name, address, size in self.addresses():
            if not loader.load_initializer(name, address, size):
                raise GptOssError(f"{what}: TensorRT refused initializer {name} ({size} bytes)")

    def close(self) -> None:
        """Unmap the files (TensorRT must be done with the addresses)."""
        mappings = [mapping for mapping, _ in self._maps.values()]
        self._maps.clear()  # drops the arrays that export the mappings' buffers
        for mapping in mappings:
            mapping.close()
