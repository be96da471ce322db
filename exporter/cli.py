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


BackendOption = Annotated[
    str | None,
    typer.Option(help="tensorrt, tensorrt-rtx, onnxruntime, torch, cuda or cpu (the PyTorch model on our CUDA or "
                      "CPU kernels); default: the engine's target."),
]  # fmt: skip
_verbose = False  # --verbose: debug logs, and tracebacks of unexpected errors


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs and error tracebacks.")] = False,
) -> None:
    global _verbose
    _verbose = verbose
    logging.basicConfig(format="%(message)s")
    logging.getLogger("gptoss").setLevel(logging.DEBUG if verbose else logging.WARNING)


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="A checkpoint or engine directory.")],
    verify: Annotated[bool, typer.Option("--verify", help="Engine: also check every file's sha256.")] = False,
) -> None:
    """Print a checkpoint's config, layer types, parameter counts and expert format, or an engine's manifest."""
    from .inspection import describe, describe_engine

    typer.echo(describe_engine(path, verify) if (path / "manifest.json").is_file() else describe(path))


@app.command()
def build(
    model_dir: Annotated[
        Path | None, typer.Argument(help="Checkpoint directory; omit it to build the bundled demo model.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Engine directory to write.")] = Path("build/engine"),
    target: Annotated[str, typer.Option(help="onnx, tensorrt or tensorrt-rtx.")] = "onnx",
    head: Annotated[
        str, typer.Option(help="causal-lm, sequence-classification, token-classification or model (hidden states).")
    ] = "causal-lm",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or bf16.")] = "fp32",
    max_batch: Annotated[int, typer.Option(help="Largest batch the engine serves.")] = 8,
    max_seq_len: Annotated[int, typer.Option(help="Longest sequence (prompt + generated) per row.")] = 4096,
    all_positions: Annotated[bool, typer.Option(help="Output logits for every position (accuracy work).")] = False,
    accuracy_outputs: Annotated[
        str | None,
        typer.Option(help="Per-layer outputs for accuracy work, comma-separated: router (top-k expert ids), hidden."),
    ] = None,
    compute_capability: Annotated[
        str | None, typer.Option(help="Build ahead of time for this GPU, e.g. sm89 (TensorRT targets).")
    ] = None,
    bind_weights: Annotated[
        str, typer.Option(help="TensorRT targets: weights the engine binds from model.onnx.data, all or experts.")
    ] = "all",
    plugin_lib: Annotated[
        Path | None, typer.Option(help="libgptoss_plugins.so (TensorRT targets; default: build/plugins/).")
    ] = None,
) -> None:
    """Export a checkpoint to an engine directory (model.onnx + data, manifest.json, tokenizer.json)."""
    from .build import BuildOptions
    from .build import build as run_build

    _show_progress()
    if model_dir is None:
        from gptoss.tools.demo_model import write_demo_model

        model_dir = write_demo_model(out.parent / f"{out.name}-checkpoint")
        typer.echo(f"demo checkpoint  {model_dir}")
    options = BuildOptions(
        target=target, head=head, precision=precision, max_batch=max_batch, max_seq_len=max_seq_len,
        all_positions=all_positions, compute_capability=compute_capability, plugin_library=plugin_lib,
        bind_weights=bind_weights, accuracy_outputs=tuple(accuracy_outputs.split(",")) if accuracy_outputs else (),
    )  # fmt: skip
    manifest = run_build(model_dir, out, options)
    typer.echo(f"engine directory {manifest.engine_dir}")
    for role, entry in manifest.files.items():
        typer.echo(f"  {entry['name']:<20} {entry['size'] / 2**20:10.2f} MiB  sha256 {entry['sha256'][:16]}  ({role})")


@app.command()
def generate(
    engine_dir: Annotated[Path, typer.Argument(help="Engine directory (or a checkpoint with --backend torch).")],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="Prompt text; repeat for a batch.")],
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per prompt.")] = 64,
    sample: Annotated[bool, typer.Option("--sample/--greedy", help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely tokens (0: all).")] = 0,
    top_p: Annotated[float, typer.Option(help="Sample within this probability mass.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string; repeat for several.")] = None,
    stream: Annotated[bool, typer.Option(help="Print tokens as they come (prompts one after another).")] = False,
    chat: Annotated[
        bool, typer.Option(help="Wrap the prompt as a harmony user turn; print the final channel.")
    ] = False,
    system: Annotated[str | None, typer.Option(help="With --chat: developer instructions.")] = None,
    reasoning: Annotated[str, typer.Option(help="With --chat: low, medium or high.")] = "medium",
    backend: BackendOption = None,
) -> None:
    """Generate continuations (or chat replies) with an engine."""
    from gptoss.runtime import Engine

    engine = Engine.load(engine_dir, backend)
    options = dict(
        max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed
    )
    if chat:
        from gptoss.runtime.chat import Message

        for text in prompt:
            messages = ([Message("developer", system)] if system else []) + [Message("user", text)]
            reply = engine.chat(messages, reasoning_effort=reasoning, **options)
            if reply.analysis:
                typer.echo(f"[analysis] {reply.analysis}")
            typer.echo(f"[final] {reply.final}")
        return
    stops = stop if stop else None
    if stream:
        for index, text in enumerate(prompt):
            if len(prompt) > 1:
                typer.echo(f"[prompt {index}] ", nl=False)
            for increment in engine.generate(text, stop=stops, stream=True, **options):
                typer.echo(increment.text, nl=False)
            typer.echo()
        return
    for text, result in zip(prompt, engine.generate(prompt, stop=stops, **options), strict=True):
        typer.echo(f"prompt  {text!r}\ntokens  {result.token_ids}\ntext    {result.text!r}  ({result.finish_reason})")


@app.command()
def classify(
    engine_dir: Annotated[Path, typer.Argument(help="A classification engine directory.")],
    text: Annotated[list[str], typer.Option("--text", "-t", help="Text to classify; repeat for a batch.")],
    backend: BackendOption = None,
) -> None:
    """Classify texts (sequence head: one label each; token head: a label per token)."""
    from gptoss.runtime import Engine

    engine = Engine.load(engine_dir, backend)
    for item, result in zip(text, engine.classify(text), strict=True):
        typer.echo(f"{item!r}: {result.labels}  scores {result.scores.round(4).tolist()}")


@app.command()
def compare(
    engine_dir: Annotated[Path, typer.Argument(help="Engine directory to check.")],
    reference: Annotated[Path, typer.Option(help="Checkpoint directory of the reference model.")],
    hf: Annotated[bool, typer.Option("--hf", help="Use Hugging Face transformers as the reference.")] = False,
    prompt: Annotated[list[str] | None, typer.Option("--prompt", "-p", help="Prompt; repeat for several.")] = None,
    greedy_tokens: Annotated[int, typer.Option(help="Length of the greedy continuations compared.")] = 16,
    atol: Annotated[float, typer.Option(help="Largest acceptable max abs logit error.")] = 1e-4,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of the error by position (and layer) here.")] = None,
    text: Annotated[
        Path | None, typer.Option(help="Text file for perplexity and expert routing (default: a bundled sample).")
    ] = None,
    backend: BackendOption = None,
) -> None:
    """Compare an engine with the PyTorch model (or Hugging Face); exit 1 when it disagrees."""
    from gptoss.tools import compare as comparison

    report = comparison.compare(
        engine_dir, reference, prompts=prompt, backend=backend, use_hf=hf, greedy_tokens=greedy_tokens,
        text=comparison.read_text(text) if text else None,
    )  # fmt: skip
    typer.echo(report.table())
    if json_out:
        comparison.write_json(report, json_out)
    if plot:
        comparison.plot(report, plot)
    if not report.passed(atol):
        raise GptOssError(f"{engine_dir}: engine disagrees with the reference ({report.verdict(atol)})")


@app.command()
def embed(
    engine_dir: Annotated[Path, typer.Argument(help="An engine directory built with --head model.")],
    text: Annotated[list[str], typer.Option("--text", "-t", help="Text to embed; repeat for a batch.")],
    out: Annotated[Path | None, typer.Option(help="Write the hidden states [tokens, hidden] to this .npz.")] = None,
    backend: BackendOption = None,
) -> None:
    """Last hidden states of every token (a bare-model engine); prints each text's shape and last-token norm."""
    import numpy as np

    from gptoss.runtime import Engine

    embeddings = Engine.load(engine_dir, backend).embed(text)
    for item, embedding in zip(text, embeddings, strict=True):
        states = embedding.hidden_states
        typer.echo(f"{item!r}: {list(states.shape)}  last-token norm {np.linalg.norm(states[-1]):.4f}")
    if out:
        np.savez(out, *(embedding.hidden_states for embedding in embeddings))


@app.command()
def bench(
    engine_dir: Annotated[Path, typer.Argument(help="Causal-LM engine directory.")],
    batch: Annotated[list[int] | None, typer.Option("--batch", "-b", help="Batch size; repeat for several.")] = None,
    prompt_len: Annotated[int, typer.Option(help="Prompt tokens per row.")] = 64,
    new_tokens: Annotated[int, typer.Option(help="Generated tokens per row.")] = 32,
    vs_hf: Annotated[
        bool, typer.Option("--vs-hf", help="Also run Hugging Face transformers and print ratios.")
    ] = False,
    vs_genai: Annotated[
        bool,
        typer.Option(
            "--vs-genai", help="Also run ONNX Runtime GenAI (its own environment and model, made on first use)."
        ),
    ] = False,
    repeat: Annotated[
        int, typer.Option(help="Runs of the engine per batch size; the one at the median share of its limit is shown.")
    ] = 1,
    backend: BackendOption = None,
) -> None:
    """Prefill and decode tokens/s, time to first token and peak memory, side by side with peers."""
    from gptoss.tools import bench as benchmark

    peers = [peer for peer, wanted in (("huggingface", vs_hf), ("ort-genai", vs_genai)) if wanted]
    results = benchmark.run(
        engine_dir, backend=backend, batch_sizes=batch or [1, 4], prompt_len=prompt_len, new_tokens=new_tokens,
        peers=peers, repeat=repeat,
    )  # fmt: skip
    typer.echo(benchmark.table(results))


@app.command()
def serve(
    engine_dir: Annotated[Path, typer.Argument(help="Causal-LM engine directory (or checkpoint, --backend torch).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port (with --triton: Triton's HTTP port).")] = 8000,
    model_name: Annotated[str | None, typer.Option(help="Model id for clients (default: the directory name).")] = None,
    max_queue: Annotated[int, typer.Option(help="Requests that may wait for a free cache row; more get 429.")] = 64,
    triton: Annotated[
        bool, typer.Option("--triton", help="Serve through Triton Inference Server (PyTriton): HTTP and gRPC.")
    ] = False,
    grpc_port: Annotated[int, typer.Option(help="With --triton: Triton's gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="With --triton: Triton's metrics port.")] = 8002,
    backend: BackendOption = None,
) -> None:
    """Serve an engine: an OpenAI-compatible API (/v1/chat/completions, /v1/completions), or Triton with --triton."""
    from gptoss.runtime import Engine

    if max_queue < 0:
        raise GptOssError(f"--max-queue must be >= 0, got {max_queue}")
    if triton:
        from gptoss.serve.triton import check_environment

        check_environment()  # before loading (and checksumming) the engine
    engine = Engine.load(engine_dir, backend)
    if engine.manifest.head != "causal-lm":
        raise GptOssError(f"{engine_dir}: a {engine.manifest.head} engine cannot generate (serve needs causal-lm)")
    name = model_name or engine_dir.resolve().name
    serve_log = logging.getLogger("gptoss.serve")  # the server's address and its warnings, unless --verbose
    if serve_log.getEffectiveLevel() > logging.INFO:
        serve_log.setLevel(logging.INFO)
    if triton:
        from gptoss.serve.triton import serve_triton

        serve_triton(engine, name, host, port, grpc_port, metrics_port, max_queue)
    else:
        from gptoss.serve.server import serve as serve_openai

        serve_openai(engine, host, port, name, max_queue)


def _show_progress() -> None:
    """Show build progress on stderr unless --verbose already shows everything."""
    progress = logging.getLogger("gptoss.progress")
    if progress.getEffectiveLevel() > logging.INFO:
        progress.setLevel(logging.INFO)


def main() -> None:
    """Entry point: every error becomes one line on stderr and exit status 1 (a traceback only with --verbose)."""
    try:
        app()
    except GptOssError as exc:
        _fail(str(exc))
    except OSError as exc:  # disk full, permissions, a file vanishing under the build
        if _verbose:
            raise
        _fail(f"{exc.filename or 'I/O'}: {exc.strerror or exc}")
    except Exception as exc:
        if _verbose:
            raise
        _fail(f"internal error ({type(exc).__name__}: {exc}); run with --verbose for the traceback")


def _fail(message: str) -> None:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(1)
