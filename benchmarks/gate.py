"""The latency-regression gate's pieces: settings, same-run ratios, deterministic proxies, baseline.

A shared CI machine cannot gate on absolute seconds, so the gate (``benchmarks/test_gate.py``)
checks quantities that such noise leaves alone:

- same-run ratios: eager PyTorch over ONNX Runtime for each network call, and an SVD multi-step
  clip over an SF-V one-step clip (both on ONNX Runtime); the two sides of a ratio are
  interleaved round by round, so a burst of load slows both;
- deterministic proxies of each exported graph: node count, parameter count, FLOPs of one call at
  the bundle's sample shape, file size;

against ``benchmarks/baseline.json`` (a ratio fails below ``baseline * (1 - tolerance)``, a
proxy above ``baseline * (1 + tolerance)``). Absolute timings are still recorded by
pytest-benchmark, for ``--benchmark-compare-fail`` on machines that are stable.

Environment (or the matching pytest options, see ``benchmarks/conftest.py``):

- ``SFV_BENCH_QUICK=1``: CI mode (fewer frames and rounds, SVD 4 steps vs SF-V 1);
- ``SFV_BENCH_BUNDLE=DIR``: use this exported tiny bundle instead of exporting one;
- ``SFV_BENCH_THREADS=N``: intra-op threads (default 1: on a shared 2-core machine two threads
  per process oversubscribe the CPU and make PyTorch's timings erratic);
- ``SFV_BENCH_UPDATE_BASELINE=1``: record the measured values into the baseline instead of checking;
- ``SFV_BENCH_INJECT_SLEEP=SECONDS`` or ``NETWORK:SECONDS[,...]``: TEST-ONLY; every ONNX Runtime
  call (of NETWORK) sleeps that long, a deliberate slowdown that the gate must catch.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks.errors import BenchmarkError
from engines.base import Engine
from export.atomic import write_json_atomic
from export.specs import NETWORKS

BASELINE = Path(__file__).with_name("baseline.json")
UPDATE_COMMAND = "SFV_BENCH_UPDATE_BASELINE=1 python -m pytest benchmarks/ -q   (and again with SFV_BENCH_QUICK=1)"
DEFAULT_TOLERANCE = {"ratio": 0.5, "nodes": 0.02, "bytes": 0.02, "flops": 0.01, "parameters": 0.0}


@dataclass(frozen=True)
class GateSettings:
    """What one gate run measures."""

    mode: str  # "quick" (CI) or "full"
    frames: int  # frames of the clip
    height: int
    width: int
    rounds: int  # interleaved timed rounds per ratio
    warmup: int
    multi_steps: int  # SVD steps compared with SF-V's one
    threads: int

    @classmethod
    def from_env(cls, quick: bool | None = None, threads: int | None = None) -> "GateSettings":
        quick = _flag("SFV_BENCH_QUICK") if quick is None else quick
        threads = threads or int(os.environ.get("SFV_BENCH_THREADS", "1"))
        if quick:
            return cls("quick", frames=4, height=64, width=64, rounds=5, warmup=1, multi_steps=4, threads=threads)
        return cls("full", frames=14, height=64, width=64, rounds=9, warmup=2, multi_steps=25, threads=threads)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def update_requested() -> bool:
    return _flag("SFV_BENCH_UPDATE_BASELINE")


# --------------------------------------------------------------------------- injected slowdown (test-only)


def parse_injection(text: str | None) -> dict[str, float]:
    """``"0.2"`` -> every network sleeps 0.2 s per call; ``"unet:0.1,vae_decoder:0.5"`` -> those networks."""
    if not text or not text.strip():
        return {}
    out = {}
    for part in text.split(","):
        name, _, value = part.strip().rpartition(":")
        try:
            seconds = float(value)
        except ValueError:
            raise BenchmarkError(f"SFV_BENCH_INJECT_SLEEP: {part!r} is not SECONDS or NETWORK:SECONDS") from None
        if seconds < 0:
            raise BenchmarkError(f"SFV_BENCH_INJECT_SLEEP: negative sleep {seconds}")
        for network in ([name] if name else NETWORKS):
            if network not in NETWORKS:
                raise BenchmarkError(f"SFV_BENCH_INJECT_SLEEP: unknown network {network!r}; use one of {', '.join(NETWORKS)}")
            out[network] = seconds
    return out


class SlowedEngine(Engine):
    """Wraps an engine and sleeps ``delay`` seconds per call: a regression injected on purpose."""

    def __init__(self, inner: Engine, delay: float):
        super().__init__(inner.spec, inner.precision)
        self.inner, self.delay = inner, delay
        self.backend = inner.backend

    def _activate(self) -> None:
        self.inner.activate()

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _run(self, inputs):
        time.sleep(self.delay)
        return self.inner._run(inputs)


def inject(engines: Mapping[str, Engine], delays: Mapping[str, float]) -> dict[str, Engine]:
    return {n: SlowedEngine(e, delays[n]) if delays.get(n) else e for n, e in engines.items()}


# --------------------------------------------------------------------------- ratios


def calls_per_sample(fn: Callable[[], object], min_sample_s: float, limit: int = 64) -> int:
    """How many back-to-back calls make one sample last ``min_sample_s`` (a power of two, <= limit).

    Millisecond calls are dominated by scheduler jitter on a shared machine; averaging a few
    calls per sample keeps each sample long enough to be stable.
    """
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    n = 1
    while n * once < min_sample_s and n < limit:
        n *= 2
    return n


def paired_ratio(
    numerator: Callable[[], object], denominator: Callable[[], object], rounds: int, warmup: int,
    runner: Callable | None = None, min_sample_s: float = 0.05,
) -> tuple[float, list[float], list[float], tuple[int, int]]:
    """``median(numerator seconds per call) / median(denominator seconds per call)``, interleaved.

    Each round runs the numerator then the denominator, each ``n`` times back to back (``n``
    from :func:`calls_per_sample`). ``runner(target, setup, rounds, warmup)`` drives the rounds
    (pytest-benchmark's ``pedantic`` in the gate, so that the denominator's absolute times are
    also saved for ``--benchmark-compare``); the times used here are taken by this function.

    Returns:
        ``(ratio, numerator seconds per call, denominator seconds per call, (n_num, n_den))``.
    """
    from benchmarks.timing import summarize

    n_num, n_den = calls_per_sample(numerator, min_sample_s), calls_per_sample(denominator, min_sample_s)
    num, den = [], []

    def setup():
        start = time.perf_counter()
        for _ in range(n_num):
            numerator()
        num.append((time.perf_counter() - start) / n_num)

    def target():
        start = time.perf_counter()
        for _ in range(n_den):
            denominator()
        den.append((time.perf_counter() - start) / n_den)

    if runner is None:
        for _ in range(warmup + rounds):
            setup()
            target()
    else:
        runner(target, setup, rounds, warmup)
    # Warm-up rounds are the first ones; keep the last `rounds` of each side.
    num, den = num[-rounds:], den[-rounds:]
    return summarize(num).median / summarize(den).median, num, den, (n_num, n_den)


# --------------------------------------------------------------------------- proxies


def graph_proxies(bundle, model) -> dict[str, dict[str, int]]:
    """Per network of ``bundle``: nodes, parameters, bytes (from the manifest / files) and FLOPs
    of one call of the PyTorch network at the bundle's export sample shape."""
    from benchmarks.roofline import network_flops
    from benchmarks.workload import sample_inputs
    from export.specs import build_specs

    specs = build_specs(model.config)
    dims = bundle.manifest.get("export", {}).get("sample_dims") or {"batch": 1, "frames": 3, "height": 64, "width": 64}
    calls = {n: (n, sample_inputs(specs[n], model.config, dims)) for n in bundle.networks}
    flops = network_flops(model, calls)
    out = {}
    for n in bundle.networks:
        e = bundle.entry(n)
        size = sum((bundle.root / f).stat().st_size for f in (e["file"], e.get("external_data")) if f)
        out[n] = {"nodes": int(e["nodes"]), "parameters": int(e["parameters"]), "bytes": int(size), "flops": int(flops[n])}
    return out


def check_proxy(name: str, measured: Mapping[str, int], baseline: Mapping[str, int], tolerance: Mapping[str, float]) -> list[str]:
    """Problems (empty if none): a proxy above ``baseline * (1 + tolerance)``, or parameters changed."""
    problems = []
    for key, want in baseline.items():
        got = measured.get(key)
        if got is None:
            problems.append(f"{name}.{key}: not measured")
            continue
        tol = tolerance.get(key, 0.0)
        if key == "parameters" and got != want:
            problems.append(f"{name}.parameters: {got} vs baseline {want} (the network changed)")
        elif got > want * (1 + tol):
            problems.append(f"{name}.{key}: {got} is {100 * (got / want - 1):.1f}% above baseline {want} (tolerance {100 * tol:.0f}%)")
    return problems


# --------------------------------------------------------------------------- baseline file


def load_baseline(path: str | os.PathLike = BASELINE) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"no gate baseline at {path}; create it with `{UPDATE_COMMAND}`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path} is not valid JSON ({exc}); regenerate it with `{UPDATE_COMMAND}`") from None
    data.setdefault("tolerance", dict(DEFAULT_TOLERANCE))
    data.setdefault("proxies", {})
    data.setdefault("ratios", {})
    return data


def ratio_floor(baseline: dict, mode: str, key: str) -> float | None:
    """The lowest passing value of ratio ``key``: ``baseline * (1 - tolerance)``; None if not recorded."""
    value = baseline.get("ratios", {}).get(mode, {}).get(key)
    if value is None:
        return None
    return value * (1 - baseline["tolerance"]["ratio"])


def save_baseline(recorded: dict, mode: str, machine: dict, path: str | os.PathLike = BASELINE) -> dict:
    """Merge ``recorded`` (``{"proxies": {...}, "ratios": {...}}`` of one run in ``mode``) into the file."""
    path = Path(path)
    data = load_baseline(path) if path.is_file() else {"tolerance": dict(DEFAULT_TOLERANCE), "proxies": {}, "ratios": {}}
    data["format"] = 1
    data["update_command"] = UPDATE_COMMAND
    if recorded.get("proxies"):
        data["proxies"] = recorded["proxies"]
        data["model_config"] = recorded.get("model_config")
    if recorded.get("ratios"):
        data["ratios"][mode] = {k: round(v, 3) for k, v in sorted(recorded["ratios"].items())}
    data.setdefault("recorded", {})[mode] = {k: machine.get(k) for k in ("date", "cpu", "cores", "threads", "load_average", "versions")}
    write_json_atomic(path, data)
    return data
