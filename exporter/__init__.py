"""Export GPT-OSS checkpoints: config, checkpoint reading, the PyTorch model and its custom ops.

Attributes load lazily, so `gptoss.exporter.config` (which the runtime uses) imports without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"GptOssConfig": "config", "load_config": "config", "load_model": "loading"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
