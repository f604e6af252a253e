"""The generator deployment: one replica holds one opened pipeline and makes batches of clips.

Requests reach :meth:`Generator.generate` one clip at a time; ``@serve.batch`` gathers up to
``--max-batch`` of them (waiting at most ``--batch-wait-ms`` when busy), and the clips whose options
differ only in the seed run as one batched pipeline call (one shape). Progress and cancellation
travel through the pipeline's ``callback``: each event is reported to the gateway, which
answers with the job ids cancelled meanwhile; a True return stops the call.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import resource
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image
from ray import serve

from contract.errors import ToolkitError
from contract.specs import STAGES
from runtime.errors import Cancelled
from runtime.options import GenerateOptions
from runtime.pipeline import VideoPipeline
from runtime.progress import ProgressEvent
from runtime.video import write_video
from serving.limits import batch_key
from serving.settings import APP_NAME, GATEWAY, Settings

log = logging.getLogger(__name__)
REPORT_INTERVAL_S = 0.1  # progress reports to the gateway are coalesced to at most one per interval
BUSY_S = 0.25  # a replica that ended a batch this recently, or holds other requests, is under load


@dataclass
class ClipRequest:
    id: str
    image: bytes  # the uploaded file, checked by the gateway
    options: dict  # GenerateOptions fields
    format: str


@dataclass
class ClipResult:
    id: str
    clip: bytes | None = None  # the encoded video
    error: str | None = None
    cancelled: bool = False
    timings: dict = field(default_factory=dict)  # the batched call's seconds per stage
    batch_id: str = ""
    batch_size: int = 0
    replica: str = ""  # host:pid
    rss: int = 0  # the replica's resident bytes after the batch


def make_clips(pipe, images: list, options: GenerateOptions, seeds: list[int], callback) -> list:
    """All clips of one batch in one pipeline call, each with its own seed: the one place that
    calls the pipeline. ``callback(ProgressEvent) -> bool``; True stops the call (:class:`Cancelled`)."""
    return pipe(images, options, seeds=seeds, callback=callback, progress=False)


def stage_progress(event: ProgressEvent) -> float:
    """0-1 over the pipeline's stages, each counting the same."""
    done = STAGES.index(event.stage) if event.stage in STAGES else 0
    return min(1.0, (done + event.step / max(event.total, 1)) / len(STAGES))


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@serve.deployment(name="Generator")
class Generator:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.pipe = VideoPipeline.from_bundle(settings.bundle, **settings.engines)
        self.pipe.__enter__()  # every engine loaded before the replica takes requests
        self._batched.set_max_batch_size(settings.max_batch)
        self._inflight = 0
        self._last_batch_end = 0.0
        self._gateway = None
        self.replica = f"{os.uname().nodename}:{os.getpid()}"
        # Progress goes to the gateway from a thread of its own, so that the pipeline never waits
        # on a round trip: the callback leaves the latest state here and reads the cancelled ids
        # the reporter brought back (a cancel takes effect at most one interval later).
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[str, float]] = {}
        self._cancelled: set[str] = set()
        self._wake = threading.Event()
        threading.Thread(target=self._reporter, name="progress-reporter", daemon=True).start()

    async def generate(self, request: ClipRequest) -> ClipResult:
        # Wait to fill a batch only under load: a request alone on an idle replica starts at once
        # (the wait would be pure latency), while requests arriving on a busy one wait up to
        # --batch-wait-ms for others to share their pipeline call. Serve reads the wait when a
        # batch's first request is taken.
        busy = self._inflight > 0 or time.monotonic() - self._last_batch_end < BUSY_S
        self._batched.set_batch_wait_timeout_s(self.settings.batch_wait_ms / 1000 if busy else 0.0)
        self._inflight += 1
        try:
            return await self._batched(request)
        finally:
            self._inflight -= 1

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)  # both set per request from the settings
    async def _batched(self, requests: list[ClipRequest]) -> list[ClipResult]:
        try:
            return await asyncio.to_thread(self._run, requests)
        finally:
            self._last_batch_end = time.monotonic()

    def __del__(self):
        pipe = getattr(self, "pipe", None)
        if pipe is not None:
            pipe.close()

    # ------------------------------------------------------------------ in a worker thread

    def _run(self, requests: list[ClipRequest]) -> list[ClipResult]:
        results: dict[str, ClipResult] = {}
        groups: dict[GenerateOptions, list[tuple[ClipRequest, PIL.Image.Image, GenerateOptions]]] = {}
        for r in requests:
            try:
                image = PIL.Image.open(io.BytesIO(r.image))
                image.load()
                options = self.pipe.resolve(GenerateOptions(**r.options))
            except Exception as exc:  # the gateway checked both; this is a second line
                results[r.id] = ClipResult(r.id, error=f"bad request: {exc}")
                continue
            groups.setdefault(batch_key(options), []).append((r, image, options))
        for group in groups.values():
            self._run_group(group, results)
        return [results[r.id] for r in requests]

    def _run_group(self, group, results: dict) -> None:
        try:
            self._run_rounds(group, results)
        finally:
            with self._lock:
                self._cancelled.difference_update(r.id for r, _, _ in group)

    def _run_rounds(self, group, results: dict) -> None:
        batch_id = uuid.uuid4().hex
        while group:
            cancelled = self._report([r.id for r, _, _ in group], "starting", 0.0)
            for r, _, _ in group:
                if r.id in cancelled:
                    results[r.id] = ClipResult(r.id, cancelled=True)
            group = [g for g in group if g[0].id not in cancelled]
            if not group:
                return
            ids = [r.id for r, _, _ in group]

            def callback(event: ProgressEvent) -> bool:
                state = (event.stage, stage_progress(event))
                with self._lock:
                    self._latest.update((i, state) for i in ids)
                    stop = not self._cancelled.isdisjoint(ids)
                self._wake.set()
                return stop

            try:
                start = time.perf_counter()
                clips = make_clips(self.pipe, [im for _, im, _ in group], group[0][2], [o.seed for _, _, o in group],
                                   callback)
                total = time.perf_counter() - start
            except Cancelled:
                continue  # the next round drops the cancelled ones and runs the rest
            except ToolkitError as exc:
                for r in ids:
                    results[r] = ClipResult(r, error=str(exc))
                return
            except Exception as exc:
                log.exception("batch %s failed", batch_id)
                for r in ids:
                    results[r] = ClipResult(r, error=f"internal error: {type(exc).__name__}: {exc}")
                return
            timings = {stage: clips[0].timings.get(stage, 0.0) for stage in STAGES}  # the whole pass's
            timings["total"] = total
            rss = resident_bytes()
            for (r, _, options), clip in zip(group, clips):
                results[r.id] = ClipResult(r.id, clip=encode(clip.frames, r.format, options.fps), timings=timings,
                                           batch_id=batch_id, batch_size=len(group), replica=self.replica, rss=rss)
            return

    def _report(self, ids: list[str], stage: str, progress: float) -> set[str]:
        """Tell the gateway how far these jobs are; the answer is the ones cancelled meanwhile."""
        try:
            if self._gateway is None:
                self._gateway = serve.get_deployment_handle(GATEWAY, app_name=APP_NAME)
            cancelled = set(self._gateway.report.remote(ids, stage, progress).result(timeout_s=30))
        except Exception as exc:  # progress is best effort; the clip still gets made
            log.warning("progress report failed: %s", exc)
            return set()
        with self._lock:
            self._cancelled |= cancelled
        return cancelled

    def _reporter(self) -> None:
        """Send the latest progress of each running job, at most once per REPORT_INTERVAL_S."""
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                latest, self._latest = self._latest, {}
            by_state: dict[tuple[str, float], list[str]] = {}
            for job_id, state in latest.items():
                by_state.setdefault(state, []).append(job_id)
            for (stage, progress), ids in by_state.items():
                self._report(ids, stage, progress)
            time.sleep(REPORT_INTERVAL_S)


def encode(frames, fmt: str, fps: int) -> bytes:
    """uint8 frames [F, H, W, 3] -> the bytes of a ``fmt`` file (the runtime's writers)."""
    with tempfile.TemporaryDirectory(prefix="sfv-clip-") as tmp:
        path = Path(tmp) / f"clip.{fmt}"
        write_video(frames, path, fps=fps)
        return path.read_bytes()
