"""Prometheus metrics of one server: requests, latencies, feature fetches, model errors."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.predictions = Counter(
            "headwater_predictions", "Predictions served", ["service", "variant"], registry=r
        )
        self.predict_latency = Histogram(
            "headwater_predict_seconds",
            "Predict request latency",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feature_latency = Histogram(
            "headwater_feature_fetch_seconds",
            "Online feature fetch latency per predict request",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_latency = Histogram(
            "headwater_model_seconds",
            "Model scoring latency",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_errors = Counter(
            "headwater_model_errors", "Predict requests that failed", ["service"], registry=r
        )
        self.unknown_entities = Counter(
            "headwater_unknown_entities",
            "Predictions for entities with no online state",
            ["service"],
            registry=r,
        )
        self.ingested = Counter(
            "headwater_ingested_events", "Events appended to the log", ["stream"], registry=r
        )
        self.rejected = Counter(
            "headwater_rejected_events", "Events dead-lettered at ingest", ["stream"], registry=r
        )
