"""``python -m benchmarks.serve``: the clip service under load, beside the in-process pipeline, in one run.

Reports, per client concurrency: clips/s, p50/p95/p99 latency (upload to downloaded clip), the
mean batch size the replicas ran, errors and lost requests; and the in-process pipeline's
sequential throughput and one-clip latency measured in the same run. With a service it starts
itself (no ``--url``) it also measures batching's gain (``--max-batch`` against 1, at the top
concurrency), a replica killed mid-run (``--kill``), the replicas' resident memory across the
run, and the cost of one hop between deployments for the latents of a batch (``--hop``), the
figure behind the one-deployment design (docs/serving.md).

Figures on a loaded machine are noisy: compare ratios from one run only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import PIL.Image
import ray
import requests
from ray import serve

from contract.environment import cpu_model, vector_extensions
from contract.bundle import Bundle
from runtime.options import GenerateOptions
from runtime.pipeline import VideoPipeline
from serving.serve import build_app, start, stop
from serving.settings import APP_NAME, GENERATOR, Settings, token_digest

EXAMPLES = """examples:
  # the tiny model, SF-V's one step, ONNX Runtime on the CPU
  python -m benchmarks.serve --bundle bundle --requests 48 --concurrency 1,4,8,16 --options '{"steps": 1, "max_guidance": 1.0}'
  # with a replica killed mid-run and the hop probe
  python -m benchmarks.serve --bundle bundle --requests 48 --concurrency 1,8 --kill --hop
  # a running service
  python -m benchmarks.serve --bundle bundle --url http://10.0.0.5:8000 --token-file token.txt --requests 200 --concurrency 16"""


@dataclass
class Load:
    concurrency: int
    requests: int
    seconds: float = 0.0
    latencies: list = field(default_factory=list)
    errors: list = field(default_factory=list)  # refused uploads and failed jobs
    lost: int = 0  # accepted, never finished within the timeout

    def row(self) -> dict:
        q = np.percentile(self.latencies, [50, 95, 99]) if self.latencies else [float("nan")] * 3
        return {"concurrency": self.concurrency, "requests": self.requests, "done": len(self.latencies),
                "clips_per_s": len(self.latencies) / self.seconds if self.seconds else 0.0,
                "p50_s": q[0], "p95_s": q[1], "p99_s": q[2], "errors": len(self.errors), "lost": self.lost}


class Client:
    def __init__(self, url: str, token: str | None, image: bytes, options: dict, timeout_s: float):
        self.url, self.image, self.options, self.timeout_s = url, image, options, timeout_s
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.local = threading.local()

    def http(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session

    def one(self, seed: int, load: Load) -> None:
        http = self.http()
        start = time.perf_counter()
        r = http.post(f"{self.url}/v1/clips", files={"image": ("in.png", self.image)},
                      data={"options": json.dumps(dict(self.options, seed=seed)), "format": "npy"}, headers=self.headers)
        if r.status_code != 202:
            load.errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
            return
        job = r.json()["id"]
        while True:
            state = http.get(f"{self.url}/v1/clips/{job}", params={"wait": 5}, headers=self.headers).json()
            if state["status"] == "done":
                break
            if state["status"] in ("failed", "cancelled"):
                load.errors.append(f"{state['status']}: {state['error']}")
                return
            if time.perf_counter() - start > self.timeout_s:
                load.lost += 1
                return
        video = http.get(f"{self.url}/v1/clips/{job}/video", headers=self.headers)
        if video.status_code != 200:
            load.errors.append(f"download HTTP {video.status_code}")
            return
        load.latencies.append(time.perf_counter() - start)

    def run(self, concurrency: int, n: int, during=None) -> Load:
        load = Load(concurrency, n)
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            futures = [pool.submit(self.one, i, load) for i in range(n)]
            if during is not None:
                during()
            for f in futures:
                f.result()
        load.seconds = time.perf_counter() - start
        return load


def metric(url: str, token: str | None, name: str) -> dict:
    """``{labels: value}`` of one metric from ``/metrics``."""
    text = requests.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"} if token else {}).text
    out = {}
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            key, _, value = line.rpartition(" ")
            out[key[len(name):]] = float(value)
    return out


def mean_batch(url, token, before: dict) -> float:
    now = {k: metric(url, token, f"sfv_batch_size_{k}").get("", 0.0) for k in ("sum", "count")}
    count = now["count"] - before["count"]
    return (now["sum"] - before["sum"]) / count if count else float("nan")


def batch_counters(url, token) -> dict:
    return {k: metric(url, token, f"sfv_batch_size_{k}").get("", 0.0) for k in ("sum", "count")}


class InProcess:
    """The pipeline in this process, opened once: the baseline the service is compared with."""

    def __init__(self, bundle: str, engines: dict, image: bytes, options: dict):
        self.image = PIL.Image.open(io.BytesIO(image))
        self.options = GenerateOptions(**options)
        self.pipe = VideoPipeline.from_bundle(bundle, **engines).__enter__()
        self.stages = self.pipe(self.image, self.options, progress=False).timings  # warm-up

    def one(self, seed: int = 0) -> float:
        t = time.perf_counter()
        self.pipe(self.image, replace(self.options, seed=seed), progress=False)
        return time.perf_counter() - t

    def sequential(self, n: int) -> float:
        """clips/s, one call per clip."""
        return n / sum(self.one(i) for i in range(n))

    def batched(self, n: int, batch: int) -> float:
        """clips/s, ``batch`` clips per call."""
        t = time.perf_counter()
        rounds = max(1, n // batch)
        for r in range(rounds):
            self.pipe([self.image] * batch, self.options, seeds=list(range(r * batch, (r + 1) * batch)), progress=False)
        return rounds * batch / (time.perf_counter() - t)

    def close(self) -> None:
        self.pipe.close()


def hop_probe(shapes: dict, repeats: int = 20) -> dict:
    """Median seconds of one round trip of an array through a Serve deployment (the hop a split
    pipeline adds between two networks' deployments), per named shape."""
    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Echo:
        def __call__(self, x):
            return x

    handle = serve.run(Echo.bind(), name="hop-probe", route_prefix=None)
    out = {}
    for name, shape in shapes.items():
        x = np.random.rand(*shape).astype(np.float32)
        handle.remote(x).result()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            handle.remote(x).result()
            times.append(time.perf_counter() - t)
        out[name] = {"shape": list(shape), "mb": x.nbytes / 1e6, "round_trip_s": statistics.median(times)}
    serve.delete("hop-probe")
    return out


def kill_generator_replica() -> str:
    actors = [a for a in ray.util.list_named_actors(all_namespaces=True) if f"#{GENERATOR}#" in a["name"]]
    ray.kill(ray.get_actor(actors[0]["name"], namespace=actors[0]["namespace"]), no_restart=True)
    return actors[0]["name"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Load the clip service and compare with the in-process pipeline, in one run.")
    p.add_argument("--bundle", required=True, help="exported bundle (for the in-process baseline and a service started here)")
    p.add_argument("--url", help="a running service (default: start one on loopback)")
    p.add_argument("--token-file", help="with --url: the bearer token")
    p.add_argument("--requests", type=int, default=32, help="requests per concurrency level (default 32)")
    p.add_argument("--concurrency", default="1,4,16", help="client concurrency levels, comma-separated (default 1,4,16)")
    p.add_argument("--options", default='{"steps": 1, "max_guidance": 1.0}', help="generation options (JSON; default SF-V's one step)")
    p.add_argument("--threads", type=int, default=None, help="engine threads, in-process and per replica (default: the runtime's)")
    p.add_argument("--replicas", type=int, default=1, help="generator replicas of a service started here (default 1)")
    p.add_argument("--max-batch", type=int, default=8, help="clips per pipeline call in the service (default 8)")
    p.add_argument("--batch-wait-ms", type=float, default=20.0, help="batch wait in the service (default 20)")
    p.add_argument("--baseline-clips", type=int, default=8, help="in-process clips per sequential baseline round (default 8)")
    p.add_argument("--pairs", type=int, default=8, help="alternated in-process / service pairs for the latency ratio (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="alternated rounds for the throughput ratio (default 3)")
    p.add_argument("--compare-concurrency", type=int, default=8, help="concurrency of the throughput comparison (default 8)")
    p.add_argument("--kill", action="store_true", help="also: a run at the top concurrency with a replica killed mid-run")
    p.add_argument("--no-batching-gain", action="store_true", help="skip the --max-batch 1 comparison")
    p.add_argument("--hop", action="store_true", help="also: the round trip of a batch's latents through a deployment")
    p.add_argument("--soak", type=int, default=0, help="also: this many requests at the top concurrency, resident memory before/after")
    p.add_argument("--timeout", type=float, default=600, help="a request not done after this many seconds is lost (default 600)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)


    levels = [int(c) for c in args.concurrency.split(",")]
    options = json.loads(args.options)
    rng = np.random.RandomState(0)
    buf = io.BytesIO()
    PIL.Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8)).save(buf, format="PNG")
    image = buf.getvalue()
    engines = {"backend": "onnxruntime", "threads": args.threads}
    report = {"cpu": cpu_model(), "flags": vector_extensions(), "load_average": os.getloadavg(), "options": options}

    print("in-process pipeline ...", flush=True)
    base = InProcess(args.bundle, engines, image, options)
    report["in_process_stages_s"] = {k: v for k, v in base.stages.items() if isinstance(v, float)}

    started = args.url is None
    if started:
        token = secrets.token_hex(16)
        settings = Settings(bundle=str(Path(args.bundle).resolve()), results=str(Path(".bench-serve-results").resolve()),
                            engines=engines, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                            max_queue=10 * max(levels) + args.requests, ttl_s=600, token_sha256=token_digest(token))
        # Ray runs its workers at nice 15 (its control plane first); the in-process baseline runs
        # at 0, so on a machine shared with other work the comparison would measure the nice
        # level. The replicas run at 0 here, as the baseline does.
        url = start(settings, port=free_port(), replicas=args.replicas, object_store_bytes=200 * 2**20,
                    ray_options={"_system_config": {"worker_niceness": 0}})
    else:
        url, token = args.url.rstrip("/"), Path(args.token_file).read_text().strip() if args.token_file else None
    client = Client(url, token, image, options, args.timeout)
    try:
        client.run(1, 2)  # warm-up: the replicas' first calls
        report["service"] = rows = []
        for c in levels:
            before = batch_counters(url, token)
            row = client.run(c, args.requests).row()
            row["mean_batch"] = mean_batch(url, token, before)
            rows.append(row)
            print(f"  concurrency {c:3d}: {row['clips_per_s']:.3f} clips/s  p50 {row['p50_s']:.3f}  p95 {row['p95_s']:.3f}  "
                  f"p99 {row['p99_s']:.3f} s  batch {row['mean_batch']:.2f}  errors {row['errors']}  lost {row['lost']}", flush=True)
        top = max(levels)
        # Paired, alternated with the in-process pipeline (medians): one request alone, and the
        # service at --compare-concurrency against one-by-one clips in this process.
        pairs = [(base.one(i), client.run(1, 1).row()["p50_s"]) for i in range(args.pairs)]
        local, served = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        report["latency_alone"] = {"in_process_s": local, "service_s": served, "ratio": served / local}
        print(f"  one request alone, {args.pairs} alternated pairs: service {served:.3f} s, in-process {local:.3f} s "
              f"-> {served / local:.3f}x", flush=True)
        c = args.compare_concurrency
        rounds = []
        for _ in range(args.rounds):
            seq = base.sequential(args.baseline_clips)
            before = batch_counters(url, token)
            row = client.run(c, args.requests).row()
            rounds.append((seq, row["clips_per_s"], mean_batch(url, token, before), row["errors"] + row["lost"]))
        bat = base.batched(args.baseline_clips, args.max_batch)
        seq, srv = statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds)
        report["throughput"] = {"concurrency": c, "in_process_sequential": seq, "service": srv, "ratio": srv / seq,
                                "mean_batch": statistics.median(r[2] for r in rounds),
                                "errors_and_lost": sum(r[3] for r in rounds),
                                "in_process_batched": bat, "in_process_batch": args.max_batch}
        print(f"  concurrency {c}, {args.rounds} alternated rounds: service {srv:.3f} clips/s, in-process sequential "
              f"{seq:.3f} -> {srv / seq:.3f}x (in-process at batch {args.max_batch}: {bat:.3f} clips/s)", flush=True)
        if started and not args.no_batching_gain:
            serve.run(build_app(replace(settings, max_batch=1), replicas=args.replicas), name=APP_NAME, route_prefix="/")
            client.run(1, 2)
            row = client.run(c, args.requests).row()
            report["unbatched"] = row
            report["batching_gain"] = srv / row["clips_per_s"]
            report["batching_gain_in_process"] = bat / seq
            print(f"  --max-batch 1, concurrency {c}: {row['clips_per_s']:.3f} clips/s -> batching's gain in the service "
                  f"{report['batching_gain']:.2f}x (in-process batch {args.max_batch} vs 1: {bat / seq:.2f}x)", flush=True)
            serve.run(build_app(settings, replicas=args.replicas), name=APP_NAME, route_prefix="/")
            client.run(1, 2)
        if args.soak:
            client.run(top, 16)
            rss0 = metric(url, token, "sfv_replica_resident_bytes")
            row = client.run(top, args.soak).row()
            rss1 = metric(url, token, "sfv_replica_resident_bytes")
            growth = {k: rss1[k] / rss0[k] - 1 for k in rss0 if k in rss1}
            report["soak"] = dict(row, rss_before=rss0, rss_after=rss1, rss_growth=growth)
            print(f"  soak {args.soak} requests: errors {row['errors']}, lost {row['lost']}, replica RSS growth "
                  + ", ".join(f"{g * 100:+.1f}%" for g in growth.values()), flush=True)
        if started and args.kill:
            killed = []
            row = client.run(c, args.requests, during=lambda: (time.sleep(2.0), killed.append(kill_generator_replica()))).row()
            row["killed"] = killed
            row["retries"] = metric(url, token, "sfv_retries_total").get("", 0.0)
            report["replica_kill"] = row
            print(f"  replica killed mid-run at concurrency {c}: done {row['done']}/{row['requests']}, errors {row['errors']}, "
                  f"lost {row['lost']}, retries so far {row['retries']:.0f}", flush=True)
        if started and args.hop:
            cfg = Bundle.load(args.bundle).config
            f, h, w = cfg.num_frames, cfg.default_height // 8, cfg.default_width // 8
            report["hop"] = hop_probe({"tiny latents, batch 8": (8, f, 4, h, w),
                                       "SVD 576x1024 latents, batch 8": (8, 14, 4, 72, 128),
                                       "SVD 576x1024 frames, one clip": (14, 576, 1024, 3)})
            for name, r in report["hop"].items():
                print(f"  hop {name}: {r['mb']:.2f} MB, round trip {r['round_trip_s'] * 1000:.1f} ms", flush=True)
    finally:
        base.close()
        if started:
            stop()
    report["load_average_end"] = os.getloadavg()
    print(f"one request alone: {report['latency_alone']['ratio']:.3f}x the in-process latency (target <= 1.15)")
    t = report["throughput"]
    print(f"concurrency {t['concurrency']}: {t['ratio']:.3f}x the in-process sequential throughput (target >= 1), "
          f"mean batch {t['mean_batch']:.2f}")
    print(f"cpu: {report['cpu']} ({', '.join(report['flags'])}); load average {report['load_average']} -> {report['load_average_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
