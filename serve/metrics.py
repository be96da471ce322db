"""Prometheus metrics of one server: requests, tokens, queue depth, time to first token, inter-token latency."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The server's metrics, in a registry of their own (several servers can live in one process)."""

    def __init__(self, occupancy: Callable[[], tuple[int, int]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gptoss_requests", "HTTP requests answered, by endpoint and status.", ["endpoint", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.prompt_tokens = Counter("gptoss_prompt_tokens", "Prompt tokens admitted.", registry=self.registry)
        self.generated_tokens = Counter("gptoss_generated_tokens", "Tokens generated.", registry=self.registry)
        self.rejected = Counter("gptoss_rejected_requests", "Requests refused because the queue was full.",
                                registry=self.registry)  # fmt: skip
        running = Gauge("gptoss_running_requests", "Cache rows running a request.", registry=self.registry)
        waiting = Gauge("gptoss_queue_depth", "Requests waiting for a free cache row.", registry=self.registry)
        running.set_function(lambda: occupancy()[0])
        waiting.set_function(lambda: occupancy()[1])
        self.time_to_first_token = Histogram(
            "gptoss_time_to_first_token_seconds", "From a request's arrival to its first generated token.",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.inter_token_latency = Histogram(
            "gptoss_inter_token_latency_seconds", "Between consecutive generated tokens of one request.",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
