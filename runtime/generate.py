"""``python -m runtime.generate``: one image in, one clip out.

Everything is checked before the engines load (the image, the output path's kind, the sizes),
and the clip is written atomically, so a failed run leaves nothing at ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from contract.atomic import write_npy_atomic
from contract.bundle import MANIFEST
from contract.cli import quiet_logging, run_cli
from engines.factory import RUNTIME_PRECISIONS
from runtime.errors import InputError
from runtime.options import add_arguments, from_arguments
from runtime.pipeline import STAGES, require_torch_backend

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  # SVD: 25 Euler steps with guidance 1 -> 3 (the model's defaults), ONNX Runtime on the CPU
  python -m runtime.generate --bundle bundle --image examples/sample.png --out svd.mp4
  # SF-V: one step, no guidance (a bundle exported with an SF-V UNet)
  python -m runtime.generate --bundle bundle --image examples/sample.png --out sfv.mp4 --steps 1 --max-guidance 1
  # int8 UNet graph where the bundle has one; TensorRT engines on an NVIDIA GPU
  python -m runtime.generate --bundle bundle --image in.png --out clip.gif --precision int8
  python -m runtime.generate --bundle bundle --image in.png --out frames/ --backend tensorrt
  # OpenVINO on the CPU, bf16 arithmetic where the CPU has it (f32, the default, matches ONNX Runtime)
  python -m runtime.generate --bundle bundle --image in.png --out clip.mp4 --backend openvino --precision bf16
  # per-network engines, or the recipe python -m benchmarks.recipe measured on this CPU
  python -m runtime.generate --bundle bundle --image in.png --out clip.mp4 --engines unet=onnxruntime:int8,vae_decoder=openvino:bf16
  python -m runtime.generate --bundle bundle --image in.png --out clip.mp4 --recipe auto --steps 1 --max-guidance 1
  # the same random numbers in two runtimes (e.g. this one and the C++ sfv-generate)
  python -m runtime.generate --bundle bundle --image in.png --out a.npy --generator splitmix --save-noise noise.npz
  python -m runtime.generate --bundle bundle --image in.png --out b.npy --noise noise.npz

The built-in `tiny` model has random weights: its clips are coloured noise, which is expected.
Options left out take the model's defaults from the bundle's manifest."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.generate", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Generate a video clip from one image with an exported bundle (or a model directory).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", help="exported bundle directory (manifest.json + graphs/engines), or its manifest.json")
    src.add_argument("--model", help="run the PyTorch modules straight from a diffusers SVD directory or 'tiny' (needs torch)")
    p.add_argument("--unet", help="with --model: a UNet directory replacing the model's (e.g. an SF-V generator)")
    p.add_argument("--image", required=True, help="conditioning image (PNG, JPEG, WebP, ...)")
    p.add_argument("--out", required=True, help="clip.mp4 | clip.gif | clip.webp | clip.npy | a directory (PNG frames)")
    p.add_argument("--backend", choices=("onnxruntime", "torch", "tensorrt", "openvino"),
                   help="engines for --bundle (default onnxruntime). torch runs the PyTorch modules of the model the "
                        "bundle was exported from (its manifest's model.source) in fp32, not the bundle's graphs")
    p.add_argument("--precision", choices=RUNTIME_PRECISIONS,
                   help="graph variant to run where the bundle has it (fp16, int8, fp8), fp32 elsewhere; bf16: with "
                        "--backend openvino, the fp32 graphs in OpenVINO's bf16 arithmetic (faster on CPUs with AVX-512 "
                        "BF16 or AMX, about 1%% error per network call); with --backend tensorrt, the engines must have "
                        "been built for it (default fp32; on TensorRT the engines as built)")
    p.add_argument("--providers", help="ONNX Runtime execution providers, comma-separated: cpu (default), cuda, tensorrt")
    p.add_argument("--threads", type=int, help="ONNX Runtime / OpenVINO threads on the CPU (default: the runtime's choice)")
    p.add_argument("--engines", metavar="NET=BACKEND:PRECISION,...",
                   help="per-network engines, overriding --backend/--precision for the networks named, e.g. "
                        "unet=onnxruntime:int8,vae_decoder=openvino:bf16 (BACKEND[:PRECISION[:THREADS]]; docs/recipe.md)")
    p.add_argument("--recipe", metavar="auto|FILE",
                   help="the engines measured for this CPU by python -m benchmarks.recipe: auto = the bundle's recipe.json; "
                        "on another CPU (or without one) the default engines run, with a warning; --engines overrides it")
    p.add_argument("--ov-cache", metavar="DIR", help="with --backend openvino: compiled-model cache (the next start skips compiling)")
    add_arguments(p)
    p.add_argument("--noise", metavar="NPZ", help="explicit noise: an .npz with 'augmentation' [1,3,H,W] and 'latents' "
                                                  "[1,F,C,h,w] (unit normal; overrides --seed/--generator); --sampler lcm "
                                                  "also takes 'steps' [steps-1,1,F,C,h,w]")
    p.add_argument("--save-noise", metavar="NPZ", help="write the noise this run drew (for --noise elsewhere)")
    p.add_argument("--save-latents", metavar="NPY", help="also write the final latents [1,F,C,h,w] float32")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines (the result line is still printed)")
    return p


@run_cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with quiet_logging(args.quiet):
        return _generate(args)


def _generate(args) -> int:
    from runtime.video import check_writable, output_kind, write_video

    # 1. Cheap checks first: nothing heavy loads before the inputs are known to be usable.
    if args.unet and not args.model:
        raise InputError("--unet goes with --model (a bundle's UNet is fixed at export; re-export with --unet)")
    if args.model and args.backend not in (None, "torch"):
        raise InputError(f"--model runs on the torch backend; for --backend {args.backend} export a bundle and pass --bundle")
    if args.ov_cache and args.backend != "openvino" and not (args.engines or args.recipe):
        raise InputError("--ov-cache goes with --backend openvino (or OpenVINO engines in --engines / --recipe)")
    if args.model and (args.engines or args.recipe):
        raise InputError("--engines and --recipe choose a bundle's engines; pass --bundle")
    output_kind(args.out)
    for path in (args.out, args.save_noise, args.save_latents):
        if path:
            check_writable(path)
    if args.bundle:
        args.bundle = bundle_dir(args.bundle)
    if args.model and (Path(args.model) / MANIFEST).is_file():
        raise InputError(f"--model {args.model} is an exported bundle (it has {MANIFEST}); pass it as --bundle {args.model} "
                         "(--model takes a diffusers SVD model directory)")
    if args.model or args.backend == "torch":
        require_torch_backend()
    options = from_arguments(args)
    from runtime.noise import ExplicitNoise, RecordingNoise, noise_source, save_noise
    from runtime.pipeline import VideoPipeline
    from runtime.preprocess import load_image

    image = load_image(args.image)
    noise = ExplicitNoise.load(args.noise) if args.noise else noise_source(options.generator, options.seed)
    noise = RecordingNoise(noise)

    # 2. Engines.
    if args.model:
        pipe = VideoPipeline.from_model(args.model, unet=args.unet)
    else:
        pipe = VideoPipeline.from_bundle(args.bundle, backend=args.backend or "onnxruntime", precision=args.precision,
                                         providers=args.providers, threads=args.threads, engines=_engine_choices(args),
                                         **_openvino_options(args))
    pipe.resolve(options)  # sizes and ranges checked before the engines activate

    # 3. Generate and write.
    with pipe:
        result = pipe(image, options, noise=noise, progress=not args.quiet)
    path = write_video(result.frames, args.out, fps=result.options.fps)
    if args.save_noise:
        save_noise(args.save_noise, noise.drawn["augmentation"], noise.drawn["latents"], noise.drawn.get("steps"))
    if args.save_latents:
        write_npy_atomic(args.save_latents, result.latents)
    # The result is printed under --quiet too (which silences progress bars and log lines).
    print(f"wrote {path}: {len(result.frames)} frames {result.frames.shape[2]}x{result.frames.shape[1]} at {result.options.fps} fps")
    print(format_timings(result.timings))
    return 0


def bundle_dir(path: str) -> Path:
    """``--bundle``: the bundle directory, or the path of its ``manifest.json`` (the directory holding it)."""
    p = Path(path)
    if p.is_dir():
        return p
    if p.name == MANIFEST:
        return p.parent
    if p.exists():
        raise InputError(f"--bundle takes the bundle directory (the one holding {MANIFEST}), not the file {p}; pass the directory")
    return p  # Bundle.load says it does not exist


def format_timings(timings: dict) -> str:
    """One line: seconds per stage, the UNet's calls, and the total."""
    parts = [f"{stage} {timings[stage]:.2f}s" + (f" ({timings['unet_calls']} calls)" if stage == "unet" else "")
             for stage in STAGES if stage in timings]
    return "timings: " + " | ".join(parts) + f" | total {timings['total']:.2f}s"


def _engine_choices(args) -> dict | None:
    """Per-network engines: the recipe's (--recipe), then --engines on top of them."""
    from engines.factory import parse_engine_choices
    from engines.recipe import recipe_engines

    chosen = dict(recipe_engines(args.recipe, args.bundle) or {}) if args.recipe else {}
    chosen.update(parse_engine_choices(args.engines) if args.engines else {})
    return chosen or None


def _openvino_options(args) -> dict:
    """The OpenVINO engines' options (--backend openvino, or OpenVINO engines in --engines / --recipe)."""
    if args.backend != "openvino" and not (args.engines or args.recipe):
        return {}
    return {"ov_cache_dir": args.ov_cache}


if __name__ == "__main__":
    sys.exit(main())
