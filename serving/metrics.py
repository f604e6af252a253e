"""The service's Prometheus metrics (``GET /metrics``), in a registry of their own (not the
process-global one, which other libraries in the same process also fill)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from contract.specs import STAGES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue = Gauge("sfv_queue_length", "jobs queued or running", registry=r)
        self.requests = Counter("sfv_requests_total", "clip requests answered, by HTTP status", ["code"], registry=r)
        self.jobs = Counter("sfv_jobs_total", "jobs ended, by final status", ["status"], registry=r)
        self.failures = Counter("sfv_failures_total", "failed runs, by reason (replica_died, error)", ["reason"], registry=r)
        self.retries = Counter("sfv_retries_total", "jobs run again after their replica died", registry=r)
        self.stage = Histogram("sfv_stage_seconds", "seconds per pipeline stage of one batched call", ["stage"],
                               buckets=SECONDS, registry=r)
        self.latency = Histogram("sfv_job_seconds", "seconds from upload to finished clip", buckets=SECONDS, registry=r)
        self.batch = Histogram("sfv_batch_size", "clips per pipeline call", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
                               registry=r)
        self.rss = Gauge("sfv_replica_resident_bytes", "resident memory of a generator replica after its last batch",
                         ["replica"], registry=r)

    def observe_batch(self, size: int, timings: dict) -> None:
        self.batch.observe(size)
        for stage in STAGES:
            if stage in timings:
                self.stage.labels(stage).observe(timings[stage])

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
