"""The engine's `tokenizer.json` (Hugging Face `tokenizers`), with GPT-OSS's special tokens."""

from __future__ import annotations

from pathlib import Path

from .errors import GptOssError

# Tokens that end generation by default (HF generation_config: <|return|>, <|endoftext|>, <|call|>).
DEFAULT_STOP_TOKENS = ("<|return|>", "<|endoftext|>", "<|call|>")


class Tokenizer:
    """Encode/decode text and look up special tokens."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self._tokenizer = HFTokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise GptOssError(f"{path}: not a tokenizers JSON file ({exc})") from None
        self.path = path

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def token_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def special_id(self, token: str) -> int:
        """Id of a special token the caller requires, or an error naming it."""
        token_id = self.token_id(token)
        if token_id is None:
            raise GptOssError(f"{self.path}: special token {token} is missing")
        return token_id
