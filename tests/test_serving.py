"""The clip service on a real local Ray Serve instance (loopback, the tiny bundle, ONNX Runtime):
auth, every limit, batched clips equal to in-process ones, cancellation, a replica killed
mid-job, a restart that keeps finished results, TTL expiry.

Ray starts once for the module (2 CPUs, no dashboard, a 200 MB object store) and is shut down
at the end, so no Ray process outlives the tests.
"""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import PIL.Image
import pytest

pytest.importorskip("ray.serve")
requests = pytest.importorskip("requests")

from contract.errors import ToolkitError  # noqa: E402
from runtime.errors import InputError  # noqa: E402
from runtime.options import GenerateOptions  # noqa: E402
from serving.jobs import Job, JobStore  # noqa: E402
from serving.settings import APP_NAME, GENERATOR, Settings, token_digest  # noqa: E402

TOKEN = "test-token-0123456789"
SHORT = {"num_frames": 2, "steps": 1, "max_guidance": 1.0}  # SF-V's one step, 2 frames: ~0.1 s
LONG = {"steps": 12, "max_guidance": 2.0}  # 14 frames, guided: seconds, long enough to act on mid-run
MAX_UPLOAD = 40_000
MAX_PIXELS = 100 * 100
MAX_QUEUE = 6


def png(width: int, height: int, seed: int = 0, flat: bool = False) -> bytes:
    rng = np.random.RandomState(seed)
    pixels = np.full((height, width, 3), 120, np.uint8) if flat else (rng.rand(height, width, 3) * 255).astype(np.uint8)
    buf = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Service:
    url: str
    settings: Settings
    http: requests.Session

    def post(self, image: bytes | None = None, options: dict | None = None, fmt: str | None = None, token=TOKEN):
        files = {"image": ("in.png", image if image is not None else png(64, 64))}
        data = {k: v for k, v in (("options", json.dumps(options) if options is not None else None), ("format", fmt)) if v}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.post(f"{self.url}/v1/clips", files=files, data=data, headers=headers, timeout=60)

    def get(self, path: str, token=TOKEN):
        return self.http.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def delete(self, job_id: str):
        return self.http.delete(f"{self.url}/v1/clips/{job_id}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)

    def submit(self, options: dict, fmt: str = "npy", image: bytes | None = None) -> str:
        r = self.post(image, options, fmt)
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def wait(self, job_id: str, until=("done", "failed", "cancelled"), timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.http.get(f"{self.url}/v1/clips/{job_id}", params={"wait": 0 if "running" in until else 5},
                                  headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60).json()
            if state["status"] in until:
                return state
            assert time.monotonic() < deadline, f"job {job_id} still {state} after {timeout} s"
            time.sleep(0.05)

    def clip(self, job_id: str) -> np.ndarray:
        r = self.get(f"/v1/clips/{job_id}/video")
        assert r.status_code == 200, r.text
        return np.load(io.BytesIO(r.content))

    def metric(self, name: str) -> float:
        text = self.get("/metrics").text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


def deploy(settings: Settings) -> None:
    from ray import serve

    from serving.serve import build_app

    serve.run(build_app(settings), name=APP_NAME, route_prefix="/")


@pytest.fixture(scope="module")
def service(tiny_bundle, tmp_path_factory):
    from serving.serve import start, stop

    settings = Settings(bundle=str(tiny_bundle), results=str(tmp_path_factory.mktemp("results")),
                        engines={"backend": "onnxruntime", "threads": 1}, max_batch=4, batch_wait_ms=300,
                        max_queue=MAX_QUEUE, max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS,
                        token_sha256=token_digest(TOKEN))
    port = free_port()
    try:
        url = start(settings, port=port, num_cpus=2, object_store_bytes=200 * 2**20)
        with requests.Session() as http:
            yield Service(url, settings, http)
    finally:
        stop()


@pytest.fixture(scope="module")
def in_process(tiny_bundle):
    from runtime.pipeline import VideoPipeline

    with VideoPipeline.from_bundle(tiny_bundle, threads=1) as pipe:
        yield pipe


# ---------------------------------------------------------------------------------------- no Ray


def test_refuses_to_start_without_a_token(tmp_path, tiny_bundle):
    from serving.serve import build_parser, settings_from_arguments

    def settings(*extra):
        return settings_from_arguments(build_parser().parse_args(["--bundle", str(tiny_bundle), *extra]))

    with pytest.raises(InputError, match="refusing to start without a token"):
        settings()
    with pytest.raises(InputError, match="loopback only"):
        settings("--no-auth", "--host", "0.0.0.0")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InputError, match="is empty"):
        settings("--token-file", str(tmp_path / "empty"))
    with pytest.raises(InputError, match=r"steps \(--steps\) must be a positive integer"):
        settings("--no-auth", "--steps", "0")
    assert settings("--no-auth").token_sha256 is None
    (tmp_path / "token").write_text(TOKEN + "\n")
    s = settings("--token-file", str(tmp_path / "token"), "--steps", "1", "--threads", "1")
    assert s.token_sha256 == token_digest(TOKEN) and TOKEN not in repr(s)
    assert s.option_defaults == {"steps": 1} and s.engines["threads"] == 1


# ---------------------------------------------------------------------------------------- service


def test_auth(service):
    for token in (None, "wrong", TOKEN[:-1], TOKEN + "x"):
        assert service.post(options=SHORT, token=token).status_code == 401
        assert service.get("/metrics", token=token).status_code == 401
    r = service.http.post(f"{service.url}/v1/clips", files={"image": ("a.png", png(64, 64))},
                          headers={"Authorization": f"Basic {TOKEN}"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    job = service.submit(SHORT)
    assert service.get(f"/v1/clips/{job}", token="wrong").status_code == 401
    assert service.get(f"/v1/clips/{job}/video", token="wrong").status_code == 401
    assert service.http.delete(f"{service.url}/v1/clips/{job}").status_code == 401
    assert service.wait(job)["status"] == "done"
    assert service.http.get(f"{service.url}/healthz").json()["status"] == "ok"  # open, for probes
    assert "/v1/clips" in service.http.get(f"{service.url}/openapi.json").json()["paths"]


def test_limits(service):
    big = png(120, 120)  # noise: ~43 kB, above the 40 kB cap
    assert len(big) > MAX_UPLOAD
    r = service.post(big, SHORT)
    assert r.status_code == 413 and "above this service's cap" in r.json()["detail"]
    r = service.post(png(101, 100, flat=True), SHORT)  # a few hundred bytes, 10100 pixels
    assert r.status_code == 413 and "pixels" in r.json()["detail"]
    r = service.post(b"GIF89a but not really an image", SHORT)
    assert r.status_code == 422 and "not an image" in r.json()["detail"]
    r = service.post(options={"steps": 1, "no_such_option": 2})
    assert r.status_code == 422 and "unknown option(s) no_such_option" in r.json()["detail"]
    r = service.http.post(f"{service.url}/v1/clips", data={"options": "{}"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 422 and "no 'image' file" in r.json()["detail"]
    for bad in ({"steps": 0}, {"min_guidance": 3.0, "max_guidance": 2.0}, {"height": 65}, {"generator": "nope"}):
        with pytest.raises(ToolkitError) as cli:  # the message runtime.generate prints for the same value
            GenerateOptions(**bad).resolve(*_config(service))
        r = service.post(options=bad)
        assert r.status_code == 422 and r.json()["detail"] == str(cli.value)
    assert service.post(options=[1, 2]).status_code == 422
    r = service.http.post(f"{service.url}/v1/clips", files={"image": ("a.png", png(64, 64))}, data={"options": "{bad"},
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    assert service.post(options=SHORT, fmt="avi").status_code == 422
    assert service.get("/v1/clips/0123456789abcdef0123456789abcdef").status_code == 404
    assert service.get("/v1/clips/..%2F..%2Fetc").status_code == 404  # ids are never paths


def _config(service):
    from contract.bundle import Bundle

    bundle = Bundle.load(service.settings.bundle)
    return bundle.config, bundle.sampler


def test_batched_clips_equal_in_process_clips(service, in_process):
    seeds = [11, 12, 13]
    image = png(64, 64, seed=5)
    with ThreadPoolExecutor(len(seeds)) as pool:  # at once, so that they share one batch
        jobs = list(pool.map(lambda s: service.submit(dict(SHORT, seed=s), image=image), seeds))
    states = [service.wait(j) for j in jobs]
    assert all(s["status"] == "done" for s in states), states
    assert max(s["timings"]["batch_size"] for s in states) > 1  # batched, not one by one
    for job, seed in zip(jobs, seeds):
        alone = in_process(PIL.Image.open(io.BytesIO(image)), GenerateOptions(**SHORT, seed=seed), progress=False)
        assert np.array_equal(service.clip(job), alone.frames)  # bit for bit on ONNX Runtime CPU
    assert service.metric("sfv_batch_size_count") >= 1


def test_python_client(service, tmp_path):
    from serving.client import ServiceError, generate_clip

    image = tmp_path / "in.png"
    image.write_bytes(png(64, 64, seed=1))
    out = generate_clip(service.url, image, tmp_path / "clip.mp4", token=TOKEN, options=SHORT, progress=False)
    assert out.read_bytes()[4:8] == b"ftyp"  # an mp4
    with pytest.raises(ServiceError, match="HTTP 401"):
        generate_clip(service.url, image, tmp_path / "x.mp4", token="wrong", progress=False)


def test_cancel_and_queue_cap(service):
    jobs = [service.submit(dict(LONG, seed=i)) for i in range(MAX_QUEUE)]
    r = service.post(options=SHORT)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    service.wait(jobs[0], until=("running",))
    for job in jobs[1:]:  # queued ones, and the running batch's others
        r = service.delete(job)
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
    for job in jobs[1:]:
        assert service.get(f"/v1/clips/{job}").json()["status"] == "cancelled"
        assert service.get(f"/v1/clips/{job}/video").status_code == 409
    assert service.delete(jobs[1]).status_code == 409  # already over
    assert service.wait(jobs[0])["status"] == "done"  # the batch went on without the cancelled ones
    assert service.wait(service.submit(SHORT))["status"] == "done"
    assert service.http.get(f"{service.url}/healthz").json()["pending"] == 0


def test_cancel_stops_a_running_clip(service):
    job = service.submit(dict(LONG, steps=200))
    service.wait(job, until=("running",))
    while service.get(f"/v1/clips/{job}").json()["stage"] != "unet":
        time.sleep(0.05)
    assert service.delete(job).status_code == 200
    # a replica runs one batch at a time: the next job runs once the cancelled one has stopped
    assert service.wait(service.submit(SHORT), timeout=300)["status"] == "done"
    state = service.get(f"/v1/clips/{job}").json()
    assert state["status"] == "cancelled" and state["stage"] == "unet"  # stopped within the 200 UNet steps


def test_replica_killed_mid_job(service):
    import ray

    job = service.submit(LONG)
    service.wait(job, until=("running",))
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if f"#{GENERATOR}#" in a["name"]]
    assert len(replicas) == 1
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
    state = service.wait(job, timeout=180)
    assert state["status"] == "done" or (state["status"] == "failed" and "replica" in state["error"]), state
    assert service.metric("sfv_retries_total") >= 1
    assert service.wait(service.submit(SHORT), timeout=180)["status"] == "done"  # still serving


def test_restart_keeps_results_and_expires_them(service):
    from ray import serve

    done = service.submit(SHORT)
    service.wait(done)
    before = service.clip(done)
    # what a crash leaves behind: one job mid-run on its first try, one on its second
    store = JobStore(service.settings.results)
    image = png(64, 64, seed=9)
    first = Job.new(dict(SHORT, seed=4), "npy")
    first.status, first.attempts = "running", 1
    second = Job.new(dict(SHORT, seed=5), "npy")
    second.status, second.attempts = "running", 2
    serve.delete(APP_NAME)
    store.create(first, image)
    store.create(second, image)
    deploy(service.settings)
    assert np.array_equal(service.clip(done), before)  # kept across the restart
    assert service.wait(first.id)["status"] == "done"  # run once more
    state = service.wait(second.id)
    assert state["status"] == "failed" and "stopped twice" in state["error"]
    # --ttl: finished jobs' records and files go
    deploy(dataclasses.replace(service.settings, ttl_s=1.0))
    deadline = time.monotonic() + 30
    while service.get(f"/v1/clips/{done}").status_code != 404:
        assert time.monotonic() < deadline, "the finished job did not expire"
        time.sleep(0.2)
    assert not (store.root / done).exists()
