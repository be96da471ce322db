"""Load benchmark of `gptoss-export serve`: N concurrent streaming clients on loopback for a bounded time, then one
client for the same time, against one server started for the run; prints requests/s, output tokens/s, and the p50
and p99 of time to first token and inter-token latency for both, and their ratio (the gain of batching across
requests, measured in one run).

Run as `python -m gptoss.tools.bench_serve ENGINE_DIR [--clients 8] [--duration 20] [--prompt-len 64]
[--max-tokens 32] [--backend ...]`. Each request is a streamed /v1/completions of random token ids, greedy, that
ignores end tokens, so every request yields exactly `--max-tokens` tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from gptoss.runtime.manifest import read_manifest

MODEL = "bench"


@dataclass
class Phase:
    """One phase's requests: each one's time to first token and gaps between tokens, and the phase's wall time."""

    clients: int
    ttft: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    requests: int = 0
    wall: float = 0.0

    def row(self, name: str) -> str:
        p = lambda values, q: 1000 * float(np.percentile(values, q)) if values else float("nan")  # noqa: E731
        return (f"{name:<11} {self.clients:>7} {self.requests:>8} {self.requests / self.wall:>8.2f} "
                f"{self.tokens / self.wall:>10.1f} {p(self.ttft, 50):>9.1f} {p(self.ttft, 99):>9.1f} "
                f"{p(self.gaps, 50):>8.2f} {p(self.gaps, 99):>8.2f}")  # fmt: skip


async def _request(client: httpx.AsyncClient, prompt: list[int], max_tokens: int, phase: Phase) -> None:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True}  # fmt: skip
    start = time.perf_counter()
    last = None
    async with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"server answered {response.status_code}: {await response.aread()!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            if "error" in json.loads(line[6:]):
                raise RuntimeError(f"server error: {line}")
            now = time.perf_counter()
            if last is None:
                phase.ttft.append(now - start)
            else:
                phase.gaps.append(now - last)
            last = now
            phase.tokens += 1
    phase.requests += 1


async def _run_phase(url: str, clients: int, duration: float, prompts: list[list[int]], max_tokens: int) -> Phase:
    """`clients` clients each sending requests back to back until `duration` has passed (the last ones finish)."""
    phase = Phase(clients)
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as client:
        start = time.perf_counter()

        async def one_client(index: int) -> None:
            count = 0
            while time.perf_counter() - start < duration:
                await _request(client, prompts[(index + count * clients) % len(prompts)], max_tokens, phase)
                count += 1

        await asyncio.gather(*(one_client(i) for i in range(clients)))
        phase.wall = time.perf_counter() - start
    return phase


def _start_server(engine_dir: Path, backend: str | None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "gptoss.exporter", "serve", str(engine_dir), "--port", str(port),
               "--model-name", MODEL] + (["--backend", backend] if backend else [])  # fmt: skip
    server = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode}")
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError("the server did not start within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("engine_dir", type=Path)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: 8)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase (default: 20)")
    parser.add_argument("--prompt-len", type=int, default=64, help="prompt tokens per request (default: 64)")
    parser.add_argument("--max-tokens", type=int, default=32, help="generated tokens per request (default: 32)")
    parser.add_argument("--backend", default=None, help="the server's --backend")
    args = parser.parse_args()

    manifest = read_manifest(args.engine_dir)
    rng = np.random.default_rng(0)
    vocab = manifest.config.vocab_size
    prompts = [rng.integers(min(9, vocab - 1), vocab, args.prompt_len).tolist() for _ in range(64)]
    server, url = _start_server(args.engine_dir, args.backend)
    try:
        asyncio.run(_run_phase(url, 1, min(2.0, args.duration), prompts, args.max_tokens))  # warm-up
        sequential = asyncio.run(_run_phase(url, 1, args.duration, prompts, args.max_tokens))
        concurrent = asyncio.run(_run_phase(url, args.clients, args.duration, prompts, args.max_tokens))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait()
    print(f"engine {args.engine_dir} (max batch {manifest.max_batch}, max sequence {manifest.max_seq_len}), "
          f"prompt {args.prompt_len} tokens, {args.max_tokens} tokens per request, {args.duration:g} s per phase")
    print(f"{'':<11} {'clients':>7} {'requests':>8} {'req/s':>8} {'out tok/s':>10} {'TTFT p50':>9} {'TTFT p99':>9} "
          f"{'ITL p50':>8} {'ITL p99':>8}   (latencies in ms)")  # fmt: skip
    print(sequential.row("sequential"))
    print(concurrent.row("concurrent"))
    ratio = (concurrent.tokens / concurrent.wall) / (sequential.tokens / sequential.wall)
    print(f"concurrent / sequential: {ratio:.2f}x output tokens/s, "
          f"{(concurrent.requests / concurrent.wall) / (sequential.requests / sequential.wall):.2f}x requests/s")


if __name__ == "__main__":
    main()
