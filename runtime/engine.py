"""`Engine`: an engine directory (or, for the backends that run the PyTorch model, a checkpoint) ready for generate
and classify."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from .backends import MODEL_BACKENDS, Backend, open_backend
from .cache_rows import CacheRows
from .chat import REPLY_STOP_TOKENS, Message, Reply, encode_conversation, parse_reply
from .classification import Classification, ClassificationRequest
from .contract import BARE_MODEL
from .embedding import Embedding, EmbeddingRequest
from .errors import ContextLengthError, GptOssError
from .generation import GenerationRequest, GenerationResult, Increment, StopCriteria, collect
from .manifest import MANIFEST, Manifest, read_manifest
from .op_signatures import PLUGIN_VERSION
from .sampling import SamplingParams, is_integer
from .scheduler import Scheduler
from .tokenizer import DEFAULT_STOP_TOKENS, Tokenizer

Prompt = str | Sequence[int]


class Engine:
    """Runs generation or classification through one backend. Thread-safe: calls from any number of threads run
    through one scheduler (scheduler.py), batched together, each getting what it would get alone."""

    def __init__(self, manifest: Manifest, backend: Backend, tokenizer: Tokenizer | None) -> None:
        self.manifest = manifest
        self.backend = backend
        self.tokenizer = tokenizer
        self.config = manifest.config
        self._scheduler = Scheduler(backend, manifest.max_batch, manifest.max_seq_len)

    @classmethod
    def load(cls, engine_dir: str | Path, backend: str | None = None, *, verify_checksums: bool = True) -> Engine:
        """Validate the manifest (contract, plugin version, file sizes and checksums), then open the backend.

        `engine_dir` may also be a checkpoint directory, run by a PyTorch-model backend (`torch`, `cuda`, `cpu`;
        unnamed: `default_backend`'s choice).
        """
        engine_dir = Path(engine_dir)
        is_checkpoint = not (engine_dir / MANIFEST).is_file() and (engine_dir / "config.json").is_file()
        if (backend is None or backend in MODEL_BACKENDS) and is_checkpoint:
            from .backends.torch import checkpoint_manifest

            manifest = checkpoint_manifest(engine_dir)
        else:
            manifest = read_manifest(engine_dir)
            if manifest.ops.get("plugin_version") != PLUGIN_VERSION:
                raise GptOssError(
                    f"{engine_dir / MANIFEST}: engine built for plugin version {manifest.ops.get('plugin_version')!r}, "
                    f"this runtime speaks {PLUGIN_VERSION!r} (rebuild the engine)"
                )
            manifest.verify_files(check_hashes=verify_checksums)
        tokenizer = Tokenizer(manifest.tokenizer_path()) if manifest.tokenizer else None
        return cls(manifest, open_backend(manifest, backend), tokenizer)

    # ------------------------------------------------------------------ inputs

    def encode(self, prompt: Prompt, index: int = 0) -> list[int]:
        """Token ids of a prompt given as text or ids, validated against the vocabulary and engine limits."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise GptOssError(f"{self.manifest.engine_dir}: no tokenizer.json, pass token ids instead of text")
            if not prompt.isascii() and not _is_utf8(prompt):
                raise GptOssError(f"prompt {index}: not valid UTF-8 text")
            ids = self.tokenizer.encode(prompt)
        elif isinstance(prompt, Sequence | np.ndarray):
            ids = list(prompt)
            not_ids = [t for t in ids if not is_integer(t)]
            if not_ids:
                raise GptOssError(f"prompt {index}: token ids must be integers, got {not_ids[0]!r}")
            ids = [int(t) for t in ids]
        else:
            raise GptOssError(f"prompt {index}: expected text or a list of token ids, got {type(prompt).__name__}")
        vocab = self.config.vocab_size
        if not ids:
            raise GptOssError(f"prompt {index} is empty")
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise GptOssError(f"prompt {index}: token id {bad[0]} is outside the vocabulary (size {vocab})")
        if len(ids) >= self.manifest.max_seq_len:
            raise ContextLengthError(
                f"prompt {index} has {len(ids)} tokens; this engine's maximum sequence is {self.manifest.max_seq_len} "
                "(prompt and generated tokens together)"
            )
        return ids

    def _encode_all(self, prompts: Prompt | Sequence[Prompt]) -> list[list[int]]:
        """One prompt (text or ids) or a list of them, encoded and validated."""
        single = isinstance(prompts, str) or (len(prompts) > 0 and is_integer(prompts[0]))
        prompt_list = [prompts] if single else list(prompts)
        if not prompt_list:
            raise GptOssError("no prompts given")
        return [self.encode(p, i) for i, p in enumerate(prompt_list)]

    def default_stop_ids(self) -> frozenset[int]:
        ids = set(self.config.eos_token_ids)
        if self.tokenizer is not None:
            ids |= {i for i in map(self.tokenizer.token_id, DEFAULT_STOP_TOKENS) if i is not None}
        return frozenset(ids)

    def reply_stop_ids(self) -> frozenset[int]:
        """The ids of the harmony tokens that end an assistant's turn (an error without the engine's tokenizer)."""
        if self.tokenizer is None:
            raise GptOssError(f"{self.manifest.engine_dir}: chat needs the engine's tokenizer.json")
        return frozenset(self.tokenizer.special_id(token) for token in REPLY_STOP_TOKENS)

    def exclusive_rows(self, batch: int) -> AbstractContextManager[CacheRows]:
        """`batch` (at most max_batch) cache rows to step directly, for tools that need raw outputs; waits until
        running calls finish, and calls wait until it exits."""
        return self._scheduler.exclusive(batch)

    def reserve_rows(self, batch: int) -> None:
        """Size the cache rows to at least `batch` (at most max_batch) whenever they are sized, so that requests
        arriving one at a time (a server's) join rows at once instead of waiting for the running ones to finish."""
        self._scheduler.min_batch = max(1, min(batch, self.manifest.max_batch))

    def occupancy(self) -> tuple[int, int]:
        """(rows running a request, requests waiting for a row)."""
        return self._scheduler.occupancy()

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if self.tokenizer is not None else ""

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str | int] | None = None,
        stream: bool = False,
    ) -> list[GenerationResult] | Iterator[Increment]:
        """Continue each prompt (text or token ids). `stop`: strings and/or token ids; None means the
        GPT-OSS end tokens, [] means none. Returns one result per prompt, or an iterator of increments."""
        if self.manifest.head != "causal-lm":
            raise GptOssError(f"{self.manifest.engine_dir}: a {self.manifest.head} engine cannot generate")
        if not is_integer(max_new_tokens) or max_new_tokens < 1:
            raise GptOssError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        encoded = self._encode_all(prompts)
        params = SamplingParams(do_sample, temperature, top_k, top_p, seed)
        params.validate()
        criteria = self._stop_criteria(stop)
        requests = [
            GenerationRequest(i, ids, max_new_tokens, params, criteria, self._decode) for i, ids in enumerate(encoded)
        ]
        increments = self._scheduler.run(requests)
        return increments if stream else collect(increments, encoded)

    def chat(
        self,
        messages: Sequence[Message],
        *,
        reasoning_effort: str = "medium",
        max_new_tokens: int = 256,
        **sampling: Any,
    ) -> Reply:
        """The assistant's reply to a conversation, rendered in the harmony format (runtime/chat.py) and parsed
        into its channels (`reply.analysis`, `reply.final`). Generation stops where the assistant's turn ends;
        `sampling` takes `generate`'s do_sample, temperature, top_k, top_p and seed."""
        if self.tokenizer is None:
            raise GptOssError(f"{self.manifest.engine_dir}: chat needs the engine's tokenizer.json")
        ids = encode_conversation(self.tokenizer, messages, reasoning_effort=reasoning_effort)
        stop = list(self.reply_stop_ids())
        result = self.generate(ids, max_new_tokens=max_new_tokens, stop=stop, **sampling)[0]
        return parse_reply(result.text)

    def _stop_criteria(self, stop: Sequence[str | int] | None) -> StopCriteria:
        if stop is None:
            return StopCriteria(self.default_stop_ids())
        ids = frozenset(s for s in stop if isinstance(s, int))
        strings = tuple(s for s in stop if isinstance(s, str) and s)
        return StopCriteria(ids, strings)

    # ------------------------------------------------------------------ classification

    def classify(self, inputs: Prompt | Sequence[Prompt]) -> list[Classification]:
        """Class scores for each text or id list (sequence head: pooled at the last token; token head: per token)."""
        if self.manifest.head not in ("sequence-classification", "token-classification"):
            raise GptOssError(f"{self.manifest.engine_dir}: a {self.manifest.head} engine cannot classify")
        encoded = self._encode_all(inputs)
        requests = [ClassificationRequest(i, ids, self.config.id2label) for i, ids in enumerate(encoded)]
        return self._run_in_order(requests)

    # ------------------------------------------------------------------ hidden states

    def embed(self, inputs: Prompt | Sequence[Prompt]) -> list[Embedding]:
        """The last hidden state (after the final norm) of every token of each text or id list, from an engine
        built with `--head model`; pool them as the task needs (the last token's, a mean, ...)."""
        if self.manifest.head != BARE_MODEL:
            head = self.manifest.head
            raise GptOssError(f"{self.manifest.engine_dir}: a {head} engine has no hidden states (build --head model)")
        return self._run_in_order([EmbeddingRequest(i, ids) for i, ids in enumerate(self._encode_all(inputs))])

    def _run_in_order(self, requests: list) -> list:
        """The results of requests whose events are `(index, result)`, in request order."""
        results: list = [None] * len(requests)
        for index, result in self._scheduler.run(requests):
            results[index] = result
        return results


def _is_utf8(text: str) -> bool:
    """False for text with lone surrogates (what Python makes of bytes that are not UTF-8 in argv or files)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
