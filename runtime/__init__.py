"""Run gptoss-export engine directories. Importing this package does not import torch."""

from .errors import CheckpointError, ConfigError, GptOssError

__all__ = ["CheckpointError", "ConfigError", "GptOssError"]
