"""Serve an engine over HTTP: an OpenAI-compatible API (FastAPI on uvicorn) or Triton Inference Server (PyTriton).

Every request runs through the engine's one scheduler (runtime/scheduler.py), so requests from all clients batch
together in the engine's cache rows. Needs the `serve` extra (for Triton also the `triton` extra and PyTriton
installed without its numpy pin: docs/serving.md); `gptoss.runtime` never imports this package.
"""
