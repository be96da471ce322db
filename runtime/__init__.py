"""Run gptoss-export engine directories. Importing this package does not import torch."""

from .engine import Classification, Engine
from .errors import CheckpointError, ConfigError, GptOssError
from .generation import GenerationResult, Increment

__all__ = ["CheckpointError", "Classification", "ConfigError", "Engine", "GenerationResult", "GptOssError", "Increment"]
