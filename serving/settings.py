"""What one service instance runs with: the single place of the service's defaults."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

APP_NAME = "sfv"  # the Ray Serve application
GATEWAY = "Gateway"  # its HTTP ingress deployment
GENERATOR = "Generator"  # the deployment whose replicas hold the pipeline


@dataclass(frozen=True)
class Settings:
    bundle: str  # exported bundle directory (on every node that runs a generator replica)
    results: str  # job records and clips (on the gateway's node)
    engines: dict = field(default_factory=dict)  # VideoPipeline.from_bundle's keyword arguments
    option_defaults: dict = field(default_factory=dict)  # GenerateOptions fields each request starts from
    max_batch: int = 8  # clips per pipeline call
    batch_wait_ms: float = 20.0  # how long a busy replica waits to fill a batch
    max_queue: int = 64  # jobs queued or running before uploads get 429
    max_upload_bytes: int = 16 * 2**20
    max_pixels: int = 4096 * 4096
    ttl_s: float = 24 * 3600.0  # a finished job's files live this long
    token_sha256: str | None = None  # the bearer token's digest (the token itself never leaves the CLI); None: no auth


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
