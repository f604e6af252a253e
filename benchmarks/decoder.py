"""The fast decoder against SVD's temporal decoder: parameters, FLOPs, ONNX Runtime time, quality.

One run, one process, on ONNX Runtime's CPU provider:

1. **Decoder table.** Parameters; FLOPs (``FlopCounterMode`` on fake tensors, 2 per multiply-add)
   at 14 frames of 576x1024 px; seconds per call at 14 frames of 128x128 and 256x256 px, every
   decoder interleaved round by round (medians). The full decoder is the SVD configuration's
   (``svd-random``: built here from the real config for the FLOP count; its ONNX graph from a
   full-size bundle, ``--full-decoder``). Each fast decoder (``--fast-decoder``, one or more runs of
   ``training.decoder``) is exported and validated against PyTorch into a temporary directory.
2. **Quality** from each run's ``eval.json`` (held-out clips, against the teacher's frames).
3. **End to end on tiny** (``--tiny-bundle``, a tiny bundle with ``vae_decoder_fast``): per-call
   times of every network at 14 frames of 64x64 px, and the clip estimates
   ``SVD 25 = clip + vae_encoder + 25 unet(batch 2) + vae_decoder`` against
   ``SF-V 1 = clip + vae_encoder + unet(batch 1) + vae_decoder_fast``.

``--taesdv taesdv.pth`` adds TAESDV (docs/models-taesdv.md) as one more row, exported under the
same contract (``vae_decoder_fast``) and timed in the same rounds: against SVD's decoder, against
each distilled decoder (``vs_distilled``: distilled seconds / TAESDV seconds), and on tiny against
the tiny model's decoder and the bundle's ``vae_decoder_fast``. Its time does not depend on the
teacher, so its full-size ratio is a real one.

``python -m benchmarks.decoder --fast-decoder runs/decoder \
--full-decoder bundles/svd-random --tiny-bundle runs/bundle --out results/decoder``
(``bundles/svd-random``: ``python -m export.onnx --model svd-random --out bundles/svd-random``; the
full decoder at 14 frames of 256x256 px peaked at 6.1 GB with ``--low-memory``: run it when no other
large job shares the machine's memory).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from diffusers import AutoencoderKLTemporalDecoder

from benchmarks.errors import BenchmarkError
from benchmarks.flops import count_flops
from benchmarks.machine import contention_warning, describe, machine_info
from benchmarks.report import write_json_and_markdown
from benchmarks.timing import interleave, summarize, timed
from contract.bundle import Bundle
from contract.cli import run_cli
from contract.specs import ModelConfig, build_specs, expand_dims
from export.onnx import export_network, fast_decoder_for
from export.validate import ort_session
from networks.fast_decoder import fast_decoder_dir, load_fast_decoder, open_fast_decoder
from networks.models import _svd_configs
from networks.wrappers import VaeDecoderNet

log = logging.getLogger(__name__)

TARGETS = {"speedup": 10.0, "flops_ratio": 30.0, "psnr": 28.0, "ssim": 0.9, "temporal_ratio": 1.5, "e2e": 30.0}
FLOP_DIMS = {"frames": 14, "height": 576, "width": 1024}


def svd_decoder_flops(dims: Mapping[str, int] = FLOP_DIMS) -> tuple[int, int]:
    """``(parameters, FLOPs)`` of SVD's temporal decoder (the real config, random weights) at ``dims``."""
    with torch.random.fork_rng():
        vae = AutoencoderKLTemporalDecoder(**_svd_configs()["vae"]).eval()
    net = VaeDecoderNet(vae)
    z = torch.randn(dims["frames"], vae.config.latent_channels, dims["height"] // 8, dims["width"] // 8)
    params = sum(p.numel() for p in vae.decoder.parameters())  # vae.decode is the decoder alone
    return params, count_flops(net, [z])


def fast_decoder_flops(decoder: torch.nn.Module, dims: Mapping[str, int] = FLOP_DIMS) -> int:
    scale = decoder.config.scale_factor
    z = torch.randn(dims["frames"], decoder.config.latent_channels, dims["height"] // scale, dims["width"] // scale)
    return count_flops(decoder, [z])


def export_fast(decoder: torch.nn.Module, stage: Path, name: str) -> Path:
    """The fast decoder as a validated ONNX graph in ``stage`` (the exporter's own chain)."""
    config = ModelConfig(latent_channels=decoder.config.latent_channels, vae_scale_factor=decoder.config.scale_factor)
    spec = build_specs(config)["vae_decoder_fast"]
    folder = stage / name
    folder.mkdir()
    m = config.vae_scale_factor
    _, files = export_network(
        "vae_decoder_fast", None, spec, config, folder, {"batch": 1, "frames": 3, "height": 8 * m, "width": 8 * m},
        [{"batch": 1, "frames": 14, "height": 16 * m, "width": 8 * m}], say=log.debug, net=decoder,
    )
    return files[-1]


def export_taesdv(path: str | Path, stage: Path) -> tuple[torch.nn.Module, Path]:
    """TAESDV's decoder under the ``vae_decoder_fast`` contract (SVD's scaling factor), exported
    and validated by the exporter's chain into ``stage``; ``(module, graph)``."""
    found = open_fast_decoder(path)
    if found.kind != "taesdv":
        raise BenchmarkError(f"--taesdv {path}: not a TAESDV checkpoint file (.pth or .safetensors)")
    config = ModelConfig()
    net, _ = fast_decoder_for(found, config)
    folder = stage / "taesdv"
    folder.mkdir()
    _, files = export_network(
        "vae_decoder_fast", None, build_specs(config)["vae_decoder_fast"], config, folder,
        {"batch": 1, "frames": 3, "height": 64, "width": 64}, [{"batch": 1, "frames": 14, "height": 128, "width": 64}],
        say=log.debug, net=net,
    )
    return net, files[-1]


def decoder_session(path: Path, threads: int, low_memory: bool = False):
    """An ONNX Runtime CPU session; ``low_memory`` turns off the memory arena and pattern planning
    (the full decoder at 256x256 px then peaks lower; every decoder of a run gets the same options)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if low_memory:
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def decoder_samplers(sessions: Mapping[str, object], sizes: Sequence[int], frames: int, scale: int = 8) -> dict:
    """``{(decoder, size): timed call}`` on seeded latents ``[frames, 4, size/8, size/8]``."""
    g = np.random.default_rng(0)
    samplers = {}
    for size in sizes:
        z = g.standard_normal((frames, 4, size // scale, size // scale)).astype(np.float32)
        for name, session in sessions.items():
            samplers[f"{name}@{size}"] = timed(lambda s=session, z=z: s.run(None, {"latent": z}))
    return samplers


def tiny_calls(bundle_dir: Path, threads: int, frames: int = 14, size: int = 64, repeats: int = 5,
               taesdv_graph: Path | None = None) -> dict:
    """Per-call ONNX Runtime seconds of every network of a tiny bundle, and the two clip estimates
    (and a third with TAESDV, timed in the same rounds on the same latents, given its graph)."""
    bundle = Bundle.load(bundle_dir)
    if "vae_decoder_fast" not in bundle.networks:
        raise BenchmarkError(f"{bundle_dir} has no vae_decoder_fast; export it with `python -m export.onnx --fast-decoder DIR`")
    config = bundle.config
    calls = {
        "image_encoder": ("image_encoder", {"batch": 1}),
        "vae_encoder": ("vae_encoder", {"batch": 1, "height": size, "width": size}),
        "unet_b1": ("unet", {"batch": 1, "frames": frames, "height": size, "width": size}),
        "unet_b2": ("unet", {"batch": 2, "frames": frames, "height": size, "width": size}),
        "vae_decoder": ("vae_decoder", {"frames": frames, "height": size, "width": size}),
        "vae_decoder_fast": ("vae_decoder_fast", {"frames": frames, "height": size, "width": size}),
    }
    sessions = {net: ort_session(bundle.path(net), threads) for net in {n for n, _ in calls.values()}}
    if taesdv_graph is not None:
        calls["taesdv"] = ("vae_decoder_fast", calls["vae_decoder_fast"][1])  # same signature, same latents
        sessions["taesdv"] = ort_session(taesdv_graph, threads)
    samplers = {}
    for call, (net, dims) in calls.items():
        feeds = bundle.spec(net).sample_inputs(expand_dims(dims, config), config)
        samplers[call] = timed(lambda s=sessions["taesdv" if call == "taesdv" else net], f=feeds: s.run(None, f))
    stats = {k: summarize(v) for k, v in interleave(samplers, repeats, warmup=1).items()}
    m = {k: s.median for k, s in stats.items()}
    svd25 = m["image_encoder"] + m["vae_encoder"] + 25 * m["unet_b2"] + m["vae_decoder"]
    sfv1 = m["image_encoder"] + m["vae_encoder"] + m["unet_b1"] + m["vae_decoder"]
    sfv1_fast = m["image_encoder"] + m["vae_encoder"] + m["unet_b1"] + m["vae_decoder_fast"]
    result = {
        "frames": frames, "height": size, "width": size, "repeats": repeats,
        "calls": {k: s.to_json() for k, s in stats.items()},
        "svd25_full_s": svd25, "sfv1_full_s": sfv1, "sfv1_fast_s": sfv1_fast,
        "speedup_sfv1_full": svd25 / sfv1, "speedup_sfv1_fast": svd25 / sfv1_fast,
        "decoder_share_sfv1_full": m["vae_decoder"] / sfv1,
    }
    if "taesdv" in m:
        sfv1_taesdv = sfv1 - m["vae_decoder"] + m["taesdv"]
        result.update(sfv1_taesdv_s=sfv1_taesdv, speedup_sfv1_taesdv=svd25 / sfv1_taesdv,
                      taesdv_vs_vae_decoder=m["vae_decoder"] / m["taesdv"], taesdv_vs_fast=m["vae_decoder_fast"] / m["taesdv"])
    return result


def _full_decoder_graph(path: Path) -> Path:
    """``vae_decoder.onnx`` itself, or the one in a bundle directory (read only, any manifest version)."""
    graph = path / "vae_decoder.onnx" if path.is_dir() else path
    if not graph.is_file():
        raise BenchmarkError(f"--full-decoder {path}: no vae_decoder.onnx there; export one with "
                             "`python -m export.onnx --model svd-random --networks vae_decoder --out DIR`")
    return graph


def run(fast_dirs: Sequence[str], full_decoder: str | None, tiny_bundle: str | None, sizes: Sequence[int], frames: int,
        repeats: int, threads: int, low_memory: bool = False, taesdv: str | None = None) -> dict:
    info = machine_info(threads)
    warning = contention_warning(info)
    if warning:
        log.warning(warning)
    result: dict = {"machine": info, "targets": TARGETS, "flop_dims": FLOP_DIMS, "frames": frames, "sizes": list(sizes), "repeats": repeats,
                    "low_memory": low_memory}
    rows: dict[str, dict] = {}
    full_params, full_flops = svd_decoder_flops()
    rows["svd_decoder"] = {"parameters": full_params, "gflop": full_flops / 1e9}
    decoders = {}
    for d in fast_dirs:
        name = f"fast:{fast_decoder_dir(d).parent.name if fast_decoder_dir(d).name == 'decoder' else fast_decoder_dir(d).name}"
        decoders[name] = (d, load_fast_decoder(d))
        dec = decoders[name][1]
        rows[name] = {"parameters": sum(p.numel() for p in dec.parameters()), "gflop": fast_decoder_flops(dec) / 1e9,
                      "temporal": dec.config.temporal, "source": str(fast_decoder_dir(d))}
        eval_file = fast_decoder_dir(d).parent / "eval.json"
        if eval_file.is_file():
            rows[name]["quality"] = json.loads(eval_file.read_text())
    with tempfile.TemporaryDirectory(prefix="decoder-bench-") as tmp:
        sessions = {}
        if full_decoder:
            sessions["svd_decoder"] = decoder_session(_full_decoder_graph(Path(full_decoder)), threads, low_memory)
        for i, (name, (_, dec)) in enumerate(decoders.items()):
            sessions[name] = decoder_session(export_fast(dec, Path(tmp), f"d{i}"), threads, low_memory)
        taesdv_graph = None
        if taesdv:
            net, taesdv_graph = export_taesdv(taesdv, Path(tmp))
            z = torch.randn(FLOP_DIMS["frames"], 4, FLOP_DIMS["height"] // 8, FLOP_DIMS["width"] // 8)
            rows["taesdv"] = {"parameters": sum(p.numel() for p in net.parameters()), "gflop": count_flops(net, [z]) / 1e9,
                              "temporal": "memory", "source": str(Path(taesdv).resolve())}
            sessions["taesdv"] = decoder_session(taesdv_graph, threads, low_memory)
        log.info("timing %s at %s px, %d frames, %d rounds", ", ".join(sessions), sizes, frames, repeats)
        stats = {k: summarize(v) for k, v in interleave(decoder_samplers(sessions, sizes, frames), repeats, warmup=1).items()}
        if tiny_bundle:  # while the TAESDV graph exists
            result["tiny_end_to_end"] = tiny_calls(Path(tiny_bundle), threads, frames, taesdv_graph=taesdv_graph)
    for key, s in stats.items():
        name, size = key.rsplit("@", 1)
        rows[name].setdefault("seconds", {})[size] = s.to_json()
    for name, row in rows.items():
        if name == "svd_decoder":
            continue
        row["flops_ratio"] = rows["svd_decoder"]["gflop"] / row["gflop"]
        if "seconds" in rows["svd_decoder"]:
            row["speedup"] = {size: rows["svd_decoder"]["seconds"][size]["median"] / row["seconds"][size]["median"] for size in row["seconds"]}
    if "taesdv" in rows:  # > 1: TAESDV is faster than that distilled decoder
        rows["taesdv"]["vs_distilled"] = {
            name: {size: rows[name]["seconds"][size]["median"] / rows["taesdv"]["seconds"][size]["median"] for size in row["seconds"]}
            for name, row in rows.items() if name.startswith("fast:")
        }
    result["decoders"] = rows
    return result


def format_markdown(result: dict) -> str:
    """The decoder table, the quality table and the end-to-end line, with targets marked."""
    t, rows, sizes = result["targets"], result["decoders"], [str(s) for s in result["sizes"]]
    ok = lambda good: "pass" if good else "MISS"  # noqa: E731
    lines = [f"Measured on {describe(result['machine'])}, {result['machine']['date']}; ONNX Runtime CPU, "
             f"{result['frames']} frames, medians of {result['repeats']} interleaved rounds.", "",
             "| decoder | parameters | GFLOP (14 x 576x1024) | FLOPs ratio | " + " | ".join(f"s @ {s}x{s}" for s in sizes)
             + " | " + " | ".join(f"speedup @ {s}" for s in sizes) + " |",
             "|---" * (4 + 2 * len(sizes)) + "|"]
    for name, r in rows.items():
        # The targets are the distilled decoder's; TAESDV's row is a comparison, not graded.
        mark = (lambda good: f" ({ok(good)})") if name.startswith("fast:") else (lambda good: "")  # noqa: E731
        secs = [f"{r['seconds'][s]['median']:.4g}" if "seconds" in r else "-" for s in sizes]
        speed = [f"{r['speedup'][s]:.1f}x{mark(r['speedup'][s] >= t['speedup'])}" if "speedup" in r else "-" for s in sizes]
        ratio = f"{r['flops_ratio']:.0f}x{mark(r['flops_ratio'] >= t['flops_ratio'])}" if "flops_ratio" in r else "1x"
        lines.append(f"| {name} | {r['parameters']:,} | {r['gflop']:.0f} | {ratio} | " + " | ".join(secs) + " | " + " | ".join(speed) + " |")
    quality = {n: r["quality"] for n, r in rows.items() if "quality" in r}
    if quality:
        lines += ["", "| decoder | steps | train s | PSNR vs teacher | SSIM vs teacher | temporal (teacher) | ratio | baseline PSNR / SSIM |",
                  "|---|---|---|---|---|---|---|---|"]
        for n, q in quality.items():
            s, b = q["student"], q["baseline"]
            lines.append(f"| {n} | {q['steps']} | {q['train_seconds']:.0f} | {s['psnr']:.2f} ({ok(s['psnr'] >= t['psnr'])}) | "
                         f"{s['ssim']:.3f} ({ok(s['ssim'] >= t['ssim'])}) | {s['temporal']:.4f} ({s['teacher_temporal']:.4f}) | "
                         f"{s['temporal_ratio']:.2f} ({ok(s['temporal_ratio'] <= t['temporal_ratio'])}) | {b['psnr']:.2f} / {b['ssim']:.3f} |")
    for name, ratios in rows.get("taesdv", {}).get("vs_distilled", {}).items():
        lines += ["", f"TAESDV vs {name}, same rounds: " + ", ".join(f"{r:.2f}x at {s}x{s}" for s, r in ratios.items())
                  + " (distilled seconds / TAESDV seconds; > 1: TAESDV is faster)"]
    e2e = result.get("tiny_end_to_end")
    if e2e:
        c = {k: v["median"] for k, v in e2e["calls"].items()}
        lines += ["", f"Tiny end to end ({e2e['frames']} frames at {e2e['height']}x{e2e['width']}, per-call medians): "
                  + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in c.items()),
                  f"SVD 25 steps + full decoder {e2e['svd25_full_s']:.3f} s; SF-V 1 step + full decoder {e2e['sfv1_full_s']:.3f} s "
                  f"({e2e['speedup_sfv1_full']:.1f}x, decoder {100 * e2e['decoder_share_sfv1_full']:.0f}%); SF-V 1 step + fast decoder "
                  f"{e2e['sfv1_fast_s']:.3f} s ({e2e['speedup_sfv1_fast']:.1f}x, {ok(e2e['speedup_sfv1_fast'] >= t['e2e'])})."]
        if "sfv1_taesdv_s" in e2e:
            lines.append(f"TAESDV on tiny: {e2e['taesdv_vs_vae_decoder']:.2f}x the tiny model's decoder, {e2e['taesdv_vs_fast']:.2f}x "
                         f"the bundle's vae_decoder_fast (their seconds / TAESDV's); SF-V 1 step + TAESDV {e2e['sfv1_taesdv_s']:.3f} s "
                         f"({e2e['speedup_sfv1_taesdv']:.1f}x).")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.decoder",
        description="Fast decoder vs SVD's temporal decoder: parameters, FLOPs, ONNX Runtime CPU time, held-out quality, "
                    "and the tiny end-to-end estimate, in one run.",
        epilog="example (bundles/svd-random: `python -m export.onnx --model svd-random --out bundles/svd-random`):\n"
               "  python -m benchmarks.decoder --fast-decoder runs/decoder \\\n"
               "      --full-decoder bundles/svd-random --tiny-bundle runs/bundle --out results/decoder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--fast-decoder", nargs="+", default=[], metavar="DIR", help="training.decoder run(s) (OUT or OUT/decoder)")
    p.add_argument("--taesdv", metavar="FILE", help="TAESDV's checkpoint (taesdv.pth or .safetensors): one more row, same rounds")
    p.add_argument("--full-decoder", metavar="PATH", help="the full-size (svd-random) vae_decoder.onnx, or a bundle directory holding it")
    p.add_argument("--tiny-bundle", metavar="DIR", help="a tiny bundle with vae_decoder_fast for the end-to-end estimate")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="square sizes in px (default: 128 256)")
    p.add_argument("--frames", type=int, default=14)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--low-memory", action="store_true", help="ONNX Runtime without its memory arena (lower peak RSS)")
    p.add_argument("--out", metavar="DIR", help="write decoder.json and decoder.md here")
    return p


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.repeats < 1 or args.frames < 1 or args.threads < 1:
        raise BenchmarkError("--repeats, --frames and --threads must be >= 1")
    if not args.fast_decoder and not args.taesdv:
        raise BenchmarkError("give a decoder to compare: --fast-decoder DIR (a training.decoder run) and/or --taesdv FILE")
    result = run(args.fast_decoder, args.full_decoder, args.tiny_bundle, args.sizes, args.frames, args.repeats, args.threads,
                 args.low_memory, taesdv=args.taesdv)
    text = format_markdown(result)
    print(text)
    if args.out:
        write_json_and_markdown(args.out, "decoder", result, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
