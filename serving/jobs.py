"""Job records and results on disk: one directory per job under ``--results``, written atomically.

Layout of ``RESULTS/<id>/``: ``job.json`` (the record), ``input`` (the uploaded image, kept until
the job ends so that a restarted service can run it again) and ``clip.<format>`` (the result).
Every file goes through :mod:`export.atomic`, so a crash never leaves half a record or half a
clip; a service that starts on the same directory finds every finished clip downloadable.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from contract.atomic import write_bytes_atomic, write_json_atomic

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
FORMATS = {"mp4": "video/mp4", "webp": "image/webp", "gif": "image/gif", "npy": "application/octet-stream"}
RECORD = "job.json"
INPUT = "input"


@dataclass
class Job:
    """One clip request and what became of it."""

    id: str
    options: dict  # the client's GenerateOptions fields (validated)
    format: str  # one of FORMATS
    status: str = "queued"
    progress: float = 0.0  # 0-1, over the pipeline's stages
    stage: str | None = None
    error: str | None = None
    timings: dict = field(default_factory=dict)  # seconds per stage, queue and total
    attempts: int = 0  # runs started (a replica that dies mid-run costs one; at most 2)
    created: float = field(default_factory=time.time)
    finished: float | None = None

    @staticmethod
    def new(options: dict, format: str) -> "Job":
        return Job(id=uuid.uuid4().hex, options=options, format=format)

    def public(self) -> dict:
        """What ``GET /v1/clips/{id}`` answers."""
        return {"id": self.id, "status": self.status, "progress": round(self.progress, 4), "stage": self.stage,
                "error": self.error, "timings": self.timings}


class JobStore:
    """The records of ``root``; the caller (one gateway process) is the only writer."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, job_id: str) -> Path:
        if not (len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)):
            raise KeyError(job_id)  # never a path from a client: ids are uuid4 hex
        return self.root / job_id

    def create(self, job: Job, image: bytes) -> None:
        write_bytes_atomic(self._dir(job.id) / INPUT, image)
        self.save(job)

    def save(self, job: Job) -> None:
        write_json_atomic(self._dir(job.id) / RECORD, dataclasses.asdict(job))

    def input(self, job: Job) -> bytes:
        return (self._dir(job.id) / INPUT).read_bytes()

    def result_path(self, job: Job) -> Path:
        return self._dir(job.id) / f"clip.{job.format}"

    def finish(self, job: Job, status: str, *, clip: bytes | None = None, error: str | None = None) -> None:
        """Write the clip (if any), then the record: a record that says ``done`` has its clip."""
        if clip is not None:
            write_bytes_atomic(self.result_path(job), clip)
        job.status, job.error, job.finished = status, error, time.time()
        job.progress = 1.0 if status == "done" else job.progress
        self.save(job)
        (self._dir(job.id) / INPUT).unlink(missing_ok=True)

    def load_all(self) -> list[Job]:
        """Every readable record (a directory without one is a job whose creation was interrupted: removed)."""
        jobs = []
        names = {f.name for f in dataclasses.fields(Job)}
        for d in sorted(self.root.iterdir()):
            if not d.is_dir() or d.name.startswith("."):
                continue
            try:
                data = json.loads((d / RECORD).read_text())
                jobs.append(Job(**{k: v for k, v in data.items() if k in names}))
            except (OSError, ValueError, TypeError):
                shutil.rmtree(d, ignore_errors=True)
        return jobs

    def remove(self, job: Job) -> None:
        shutil.rmtree(self._dir(job.id), ignore_errors=True)
