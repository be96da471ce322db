"""Run gptoss-export engine directories. Importing this package does not import torch.

Attributes load lazily, so a submodule (e.g. `gptoss.runtime.errors`, which the exporter's config uses) imports
without the engine and its backends.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CheckpointError": "errors",
    "Classification": "classification",
    "ConfigError": "errors",
    "Engine": "engine",
    "GenerationResult": "generation",
    "GptOssError": "errors",
    "Increment": "generation",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
