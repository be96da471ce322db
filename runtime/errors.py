"""Error types shared by every part of gptoss-export.

Each carries a one-line message naming the file, tensor or argument at fault and what was
expected; the CLI prints it and exits non-zero.
"""


class GptOssError(Exception):
    """Base class of every error gptoss-export reports to its user."""


class ConfigError(GptOssError):
    """A config.json value is missing, malformed or inconsistent."""


class ContextLengthError(GptOssError):
    """A prompt does not fit in the engine's maximum sequence."""


class CheckpointError(GptOssError):
    """A checkpoint file or tensor is missing, truncated or has the wrong shape or dtype."""
