"""The `gptoss-export` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import GptOssError

app = typer.Typer(
    help="Export GPT-OSS checkpoints to ONNX and TensorRT engines, and run them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@app.command()
def inspect(path: Annotated[Path, typer.Argument(help="A checkpoint directory.")]) -> None:
    """Print the config, layer types, parameter counts and expert format of a checkpoint."""
    from .summary import describe

    typer.echo(describe(path))


def main() -> None:
    """Entry point: known errors become one line on stderr and exit status 1."""
    try:
        app()
    except GptOssError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
