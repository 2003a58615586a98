"""Prometheus metrics of one server: requests, latencies, feature fetches, model errors."""

from __future__ import annotations

from typing import Any, Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# with several workers one of them runs the monitor: its latest figures are the gauges' values
MONITOR_MODE: Final[Literal["mostrecent"]] = "mostrecent"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class ServiceMetrics:
    """One service's labelled metrics, looked up once instead of on every request."""

    def __init__(self, metrics: ServerMetrics, service: str) -> None:
        self.predict_latency = metrics.predict_latency.labels(service)
        self.feature_latency = metrics.feature_latency.labels(service)
        self.model_latency = metrics.model_latency.labels(service)
        self.unknown_entities = metrics.unknown_entities.labels(service)
        self._predictions, self._service = metrics.predictions, service
        self._by_variant: dict[str, Any] = {}

    def predictions(self, variant: str) -> Any:
        counter = self._by_variant.get(variant)
        if counter is None:
            counter = self._by_variant[variant] = self._predictions.labels(self._service, variant)
        return counter


class ServerMetrics:
    def __init__(self) -> None:
        self._services: dict[str, ServiceMetrics] = {}
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
        version = ["service", "variant", "model", "version"]
        self.live_metric = Gauge(
            "headwater_monitor_metric",
            "Live metric on matured labels",
            [*version, "metric"],
            multiprocess_mode=MONITOR_MODE,
            registry=r,
        )
        self.label_coverage = Gauge(
            "headwater_monitor_label_coverage",
            "Share of predictions with a matured label",
            version,
            multiprocess_mode=MONITOR_MODE,
            registry=r,
        )
        self.psi = Gauge(
            "headwater_monitor_psi",
            "Population stability index vs reference",
            [*version, "column"],
            multiprocess_mode=MONITOR_MODE,
            registry=r,
        )
        self.skew_compared = Gauge(
            "headwater_monitor_skew_compared",
            "Served feature values recomputed offline (the monitor's window)",
            ["service", "feature"],
            multiprocess_mode=MONITOR_MODE,
            registry=r,
        )
        self.skew_mismatched = Gauge(
            "headwater_monitor_skew_mismatched",
            "Served feature values that differ from their offline recomputation",
            ["service", "feature"],
            multiprocess_mode=MONITOR_MODE,
            registry=r,
        )
        self.drift_level = Gauge(
            "headwater_monitor_drift_level",
            "0 ok, 1 warn, 2 alert",
            [*version, "column"],
            multiprocess_mode=MONITOR_MODE,
            registry=r,
        )

    def for_service(self, service: str) -> ServiceMetrics:
        found = self._services.get(service)
        if found is None:
            found = self._services[service] = ServiceMetrics(self, service)
        return found

    def record_monitor(
        self, reports: list[Any], skews: dict[str, dict[str, Any]] | None = None
    ) -> None:
        """Export the latest monitor run (``Monitor.run``'s reports, and each service's skew
        totals over the monitor's window) as gauges."""
        for service, skew in (skews or {}).items():
            for feature, compared in skew.get("compared", {}).items():
                self.skew_compared.labels(service, feature).set(compared)
                self.skew_mismatched.labels(service, feature).set(
                    skew.get("mismatched", {}).get(feature, 0)
                )
        levels = {"ok": 0, "warn": 1, "alert": 2}
        for r in reports:
            labels = (r.service, r.variant, r.model, str(r.version))
            self.label_coverage.labels(*labels).set(r.label_coverage)
            for metric, value in r.metrics.items():
                self.live_metric.labels(*labels, metric).set(value)
            for d in r.drift:
                if d.psi is not None:
                    self.psi.labels(*labels, d.name).set(d.psi)
                self.drift_level.labels(*labels, d.name).set(levels.get(d.level, 0))
