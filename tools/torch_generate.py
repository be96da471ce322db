"""Greedy generation with the project's PyTorch model straight from a checkpoint directory.

Run as `python -m gptoss.tools.torch_generate MODEL_DIR "prompt" [--max-new-tokens N]`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tokenizers import Tokenizer

from gptoss.exporter import load_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("prompt")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    tokenizer = Tokenizer.from_file(str(args.model_dir / "tokenizer.json"))
    prompt_ids = tokenizer.encode(args.prompt).ids
    model = load_model(args.model_dir)
    new_ids = model.generate_greedy(torch.tensor([prompt_ids]), args.max_new_tokens)[0].tolist()
    print(f"prompt ids  {prompt_ids}")
    print(f"new ids     {new_ids}")
    print(f"text        {args.prompt!r} + {tokenizer.decode(new_ids)!r}")


if __name__ == "__main__":
    main()
