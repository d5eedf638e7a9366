"""Prometheus metrics, in a registry of the app's own so several apps can live in one process."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


# unreachable: no connection; disconnected: it broke mid-answer; timeout: vLLM went silent;
# server_error: a 5xx; rejected: a 4xx; bad_response: an answer that could not be read
BACKEND_ERROR_KINDS = ("unreachable", "disconnected", "timeout", "server_error", "rejected", "bad_response")


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("ai_director_requests", "HTTP requests by route and status.", ["route", "status"], registry=r)
        self.latency = Histogram(
            "ai_director_request_duration_seconds", "End-to-end request latency.", ["route"], registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.queue_depth = Gauge("ai_director_queue_depth", "Requests waiting for the model.", registry=r)
        self.queue_time = Histogram("ai_director_queue_seconds", "Time a request waited before its batch ran.", registry=r)
        self.batch_size = Histogram(
            "ai_director_batch_size", "Requests generated together.", registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128)
        )
        self.time_to_first_token = Histogram(
            "ai_director_time_to_first_token_seconds", "From admission to a request's first text.", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.inter_token_latency = Histogram(
            "ai_director_inter_token_latency_seconds", "Between two pieces of one request's text.", registry=r,
            buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1),
        )
        self.open_streams = Gauge("ai_director_open_streams", "Streaming responses in progress.", registry=r)
        self.prompt_tokens = Counter("ai_director_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.generated_tokens = Counter("ai_director_generated_tokens", "Tokens generated.", registry=r)
        self.cancelled = Counter(
            "ai_director_requests_cancelled", "Requests dropped because the client disconnected.", registry=r
        )
        self.brand_reloads = Counter("ai_director_brand_reloads", "brands.json reloads.", ["result"], registry=r)
        self.brand_reload_error = Gauge(
            "ai_director_brand_reload_error", "1 while the last brands.json reload failed.", registry=r
        )
        self.adapter_reloads = Counter(
            "ai_director_adapter_reloads", "Adapter rollouts by adapter name and result.", ["adapter", "result"], registry=r
        )
        self.adapter_reload_error = Gauge(
            "ai_director_adapter_reload_error", "1 while the adapter's folder on disk cannot be served.", ["adapter"],
            registry=r,
        )
        self.adapter_info = Gauge(
            "ai_director_adapter_info", "1 for the adapter version served now.", ["adapter", "version"], registry=r
        )
        self.brands = Gauge("ai_director_brands", "Brands served.", registry=r)
        self.check_failures = Counter(
            "ai_director_check_failures", "Generated answers failing an on-brand check.", ["check"], registry=r
        )
        self.backend_latency = Histogram(
            "ai_director_backend_request_duration_seconds",
            "vLLM's time to answer one request, the whole stream when streamed (AI_DIRECTOR_ENGINE=vllm).", registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.backend_errors = Counter(
            "ai_director_backend_errors", "Requests vLLM failed, by kind (AI_DIRECTOR_ENGINE=vllm).", ["kind"], registry=r
        )
        for result in ("ok", "failed"):  # export zeros so dashboards see the series from the start
            self.brand_reloads.labels(result=result)
        for kind in BACKEND_ERROR_KINDS:
            self.backend_errors.labels(kind=kind)

    def render(self) -> bytes:
        return generate_latest(self.registry)
