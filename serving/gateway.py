"""The HTTP ingress (FastAPI through Ray Serve): auth, limits, job records, dispatch, metrics.

One gateway replica owns the job records under ``--results``; every clip is a job that it sends
to the generator deployment (:mod:`serving.generator`) and whose result it writes atomically.
A job whose replica dies mid-run is sent once more (another replica, or the one Serve starts in
its place); a second death fails it with a clear error. On start the gateway reloads the records:
finished clips stay downloadable, jobs that were queued or running are resumed under the same rule.
"""

import asyncio
import collections
import hmac
import logging
import math
import time

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import RequestCancelledError

from contract.bundle import Bundle
from serving.generator import ClipRequest
from serving.jobs import FINISHED, FORMATS, Job, JobStore
from serving.limits import Rejected, check_format, check_image, parse_options
from serving.metrics import CONTENT_TYPE, Metrics
from serving.settings import GATEWAY, Settings, token_digest

log = logging.getLogger(__name__)
REPLICA_LOST = (RayActorError, ActorUnavailableError)
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small fields, beside the image itself
MAX_WAIT_S = 30.0  # the longest long poll (GET /v1/clips/{id}?wait=S)

app = FastAPI(
    title="sfv-deploy clips",
    description="Image-to-video clips (SVD / SF-V) on Ray Serve. Every /v1 route and /metrics take "
                "`Authorization: Bearer TOKEN` unless the service runs with --no-auth.",
    version="1",
)

CLIP_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "the conditioning image (PNG, JPEG, WebP)"},
        "options": {"type": "string", "description": 'JSON object of GenerateOptions fields, e.g. {"steps": 1, "max_guidance": 1.0, "seed": 3}'},
        "format": {"type": "string", "enum": list(FORMATS), "default": "mp4"},
    }}}}}}

@serve.deployment(name=GATEWAY, num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
@serve.ingress(app)
class Gateway:
    async def __init__(self, generator, settings: Settings):
        self.generator = generator
        self.settings = settings
        bundle = Bundle.load(settings.bundle)
        self.config, self.sampler = bundle.config, bundle.sampler
        self.store = JobStore(settings.results)
        self.metrics = Metrics()
        self.jobs: dict[str, Job] = {job.id: job for job in self.store.load_all()}
        self.responses: dict = {}
        self.finished: dict[str, asyncio.Event] = {}  # set when a job ends (long polls wait on it)
        self.tasks: set[asyncio.Task] = set()
        self.batches_seen: collections.deque = collections.deque(maxlen=1024)
        self.mean_seconds = 10.0  # running mean of a job's time, for Retry-After
        for job in list(self.jobs.values()):
            if job.status not in FINISHED:
                self._spawn(self._resume(job))
        self._spawn(self._expire_loop())
        self._update_queue()

    # ------------------------------------------------------------------ HTTP

    @app.post("/v1/clips", status_code=202, openapi_extra=CLIP_FORM)
    async def create_clip(self, request: Request) -> JSONResponse:
        """Queue one clip: multipart form with `image`, optional `options` (JSON) and `format`."""
        try:
            self._authorize(request)
            job = await self._accept(request)
        except Rejected as exc:
            self.metrics.requests.labels(str(exc.status)).inc()
            raise HTTPException(exc.status, exc.message, headers=exc.headers or None) from None
        self.metrics.requests.labels("202").inc()
        return JSONResponse({"id": job.id, "status": job.status}, status_code=202)

    @app.get("/v1/clips/{job_id}")
    async def get_clip(self, job_id: str, request: Request, wait: float = 0.0) -> dict:
        """The job's status, progress (0-1), stage, error and timings. `wait` (seconds, at most 30):
        answer as soon as the job ends or after that long, whichever is first (long polling)."""
        self._authorize_http(request)
        job = self._job(job_id)
        if wait > 0 and job.status not in FINISHED:
            event = self.finished.setdefault(job_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), timeout=min(wait, MAX_WAIT_S))
            except asyncio.TimeoutError:
                pass
        return job.public()

    @app.get("/v1/clips/{job_id}/video")
    async def get_video(self, job_id: str, request: Request):
        """The finished clip, with its media type."""
        self._authorize_http(request)
        job = self._job(job_id)
        if job.status != "done":
            raise HTTPException(409, f"clip {job_id} is {job.status}, not done; poll GET /v1/clips/{job_id}")
        return FileResponse(self.store.result_path(job), media_type=FORMATS[job.format],
                            filename=f"{job_id}.{job.format}")

    @app.delete("/v1/clips/{job_id}")
    async def cancel_clip(self, job_id: str, request: Request) -> dict:
        """Cancel a queued or running job (a finished one answers 409)."""
        self._authorize_http(request)
        job = self._job(job_id)
        if job.status in FINISHED:
            raise HTTPException(409, f"clip {job_id} is already {job.status}")
        await self._finish(job, "cancelled", error="cancelled by the client")
        response = self.responses.pop(job.id, None)
        if response is not None:
            response.cancel()  # a request still in Serve's queue never runs; a running batch learns it via report
        return job.public()

    @app.get("/healthz")
    async def healthz(self) -> dict:
        """Liveness (no token needed)."""
        return {"status": "ok", "pending": self._pending()}

    @app.get("/metrics")
    async def metrics(self, request: Request) -> Response:
        """Prometheus metrics: queue length, per-stage latency, batch sizes, failures."""
        self._authorize_http(request)
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)

    # ------------------------------------------------------------------ called by generator replicas

    async def report(self, ids: list[str], stage: str, progress: float) -> list[str]:
        """Progress of a running batch; returns the ids among ``ids`` that were cancelled."""
        cancelled = []
        for job_id in ids:
            job = self.jobs.get(job_id)
            if job is None or job.status == "cancelled":
                cancelled.append(job_id)
            if job is not None and job.status in ("queued", "running", "cancelled") and progress >= job.progress:
                # never backwards (a batch re-run after another clip's cancel starts over); a
                # cancelled job's progress is where its run stopped
                job.stage, job.progress = stage, progress
                if job.status == "queued":
                    job.status = "running"
        return cancelled

    # ------------------------------------------------------------------ internals

    def _authorize(self, request: Request) -> None:
        if self.settings.token_sha256 is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # compare digests of equal length in constant time (hmac.compare_digest), so the time taken
        # says nothing about how much of the token was right
        given = token_digest(token.strip()) if scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(given.encode(), self.settings.token_sha256.encode()):
            raise Rejected(401, "missing or wrong bearer token; send 'Authorization: Bearer TOKEN'",
                           {"WWW-Authenticate": "Bearer"})

    def _authorize_http(self, request: Request) -> None:
        try:
            self._authorize(request)
        except Rejected as exc:
            raise HTTPException(exc.status, exc.message, headers=exc.headers) from None

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no clip {job_id} (never created, or expired after the service's ttl)")
        return job

    async def _accept(self, request: Request) -> Job:
        s = self.settings
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > s.max_upload_bytes + FORM_OVERHEAD:
            raise Rejected(413, f"the upload is {length} bytes, above this service's cap of {s.max_upload_bytes}; send a smaller image")
        pending = self._pending()
        if pending >= s.max_queue:
            retry = max(1, math.ceil(self.mean_seconds * pending / max(s.max_batch, 1)))
            raise Rejected(429, f"the queue is full ({pending} jobs); retry after {retry} s", {"Retry-After": str(retry)})
        try:
            form = await request.form(max_files=1, max_fields=3)
        except Exception as exc:
            raise Rejected(422, f"the body is not a multipart form with an 'image' file ({exc})") from None
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise Rejected(422, "the form has no 'image' file; send multipart/form-data with image=@FILE")
        data = await upload.read(s.max_upload_bytes + 1)
        check_image(data, s.max_upload_bytes, s.max_pixels)
        options = form.get("options")
        fmt = form.get("format")
        if not isinstance(options, (str, type(None))) or not isinstance(fmt, (str, type(None))):
            raise Rejected(422, "'options' and 'format' are text fields, not files")
        given, _ = parse_options(options, self.config, self.sampler, s.option_defaults)
        job = Job.new(given, check_format(fmt))
        await asyncio.to_thread(self.store.create, job, data)
        self.jobs[job.id] = job
        self._update_queue()
        self._spawn(self._run(job, data))
        return job

    def _pending(self) -> int:
        return sum(job.status in ("queued", "running") for job in self.jobs.values())

    def _update_queue(self) -> None:
        self.metrics.queue.set(self._pending())

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _resume(self, job: Job) -> None:
        """A job found queued or running at start: run it again, unless it already had its second try."""
        try:
            data = await asyncio.to_thread(self.store.input, job)
        except OSError:
            await self._finish(job, "failed", error="the service restarted and this job's input is gone; submit it again")
            return
        if job.attempts >= 2:
            await self._finish(job, "failed", error="the service stopped twice while running this job; submit it again")
            return
        job.status, job.progress, job.stage = "queued", 0.0, None
        await self._run(job, data)

    async def _run(self, job: Job, image: bytes) -> None:
        while True:
            job.attempts += 1
            await asyncio.to_thread(self.store.save, job)
            response = self.generator.generate.remote(ClipRequest(job.id, image, job.options, job.format))
            self.responses[job.id] = response
            try:
                result = await response
            except REPLICA_LOST as exc:
                if job.status in FINISHED:
                    return
                self.metrics.failures.labels("replica_died").inc()
                if job.attempts >= 2:
                    await self._finish(job, "failed", error=f"the replica running this job stopped twice ({type(exc).__name__}); submit it again")
                    return
                log.warning("job %s: replica lost (%s); running it once more", job.id, type(exc).__name__)
                self.metrics.retries.inc()
                job.status, job.progress, job.stage = "queued", 0.0, None
                continue
            except (RequestCancelledError, asyncio.CancelledError):
                if job.status in FINISHED:
                    return
                raise
            except Exception as exc:
                self.metrics.failures.labels("error").inc()
                await self._finish(job, "failed", error=f"internal error: {type(exc).__name__}: {exc}")
                return
            finally:
                self.responses.pop(job.id, None)
            break
        if job.status in FINISHED:  # cancelled meanwhile
            return
        if result.cancelled:
            await self._finish(job, "cancelled", error="cancelled by the client")
        elif result.error is not None:
            self.metrics.failures.labels("error").inc()
            await self._finish(job, "failed", error=result.error)
        else:
            if result.batch_id not in self.batches_seen:
                self.batches_seen.append(result.batch_id)
                self.metrics.observe_batch(result.batch_size, result.timings)
            self.metrics.rss.labels(result.replica).set(result.rss)
            job.timings = dict(result.timings, batch_size=result.batch_size)
            await self._finish(job, "done", clip=result.clip)

    async def _finish(self, job: Job, status: str, *, clip: bytes | None = None, error: str | None = None) -> None:
        if status == "done":
            job.timings["job"] = time.time() - job.created
            self.metrics.latency.observe(job.timings["job"])
            self.mean_seconds += 0.2 * (job.timings["job"] - self.mean_seconds)
        await asyncio.to_thread(self.store.finish, job, status, clip=clip, error=None if status == "done" else error)
        self.metrics.jobs.labels(status).inc()
        self._update_queue()
        event = self.finished.pop(job.id, None)
        if event is not None:
            event.set()

    async def _expire_loop(self) -> None:
        """Remove finished jobs ``ttl`` after they finished (records and files)."""
        period = min(max(self.settings.ttl_s / 4, 0.5), 60.0)
        while True:
            await asyncio.sleep(period)
            now = time.time()
            for job in list(self.jobs.values()):
                if job.status in FINISHED and job.finished is not None and now - job.finished > self.settings.ttl_s:
                    del self.jobs[job.id]
                    await asyncio.to_thread(self.store.remove, job)
