"""Export GPT-OSS checkpoints: config, checkpoint reading, the PyTorch model and its custom ops."""

from .config import GptOssConfig, load_config
from .loading import load_model

__all__ = ["GptOssConfig", "load_config", "load_model"]
