"""Errors raised by the exporter (the same types the runtime uses)."""

from gptoss.runtime.errors import CheckpointError, ConfigError, GptOssError

__all__ = ["CheckpointError", "ConfigError", "GptOssError"]
