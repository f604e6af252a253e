"""``python -m runtime.generate``: one image in, one clip out; or many images in, one clip each.

Everything is checked before the engines load (the images, the output paths, the sizes), and
each clip is written atomically, so a failed run leaves no partial file: with one image nothing
at ``--out``; with several, the clips of the batches that finished, each whole.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import PIL.Image

from contract.atomic import write_npy_atomic
from contract.bundle import MANIFEST
from contract.cli import quiet_logging, run_cli
from contract.specs import STAGES
from engines.factory import RUNTIME_PRECISIONS, parse_engine_choices
from engines.recipe import recipe_engines
from runtime.errors import InputError
from runtime.noise import ExplicitNoise, RecordingNoise, noise_source, save_noise
from runtime.options import add_arguments, from_arguments
from runtime.pipeline import VideoPipeline, require_torch_backend
from runtime.preprocess import load_image
from runtime.video import check_writable, output_kind, write_video

log = logging.getLogger(__name__)

DEFAULT_BATCH = 4  # clips per pass with several images (memory grows with it; docs/runtime.md has the gain)
FORMATS = ("mp4", "gif", "webp", "npy")  # --format: the file kinds of runtime.video, one clip per file

EXAMPLES = """examples:
  # SVD: 25 Euler steps with guidance 1 -> 3 (the model's defaults), ONNX Runtime on the CPU
  python -m runtime.generate --bundle bundle --image examples/sample.png --out svd.mp4
  # SF-V: one step, no guidance (a bundle exported with an SF-V UNet)
  python -m runtime.generate --bundle bundle --image examples/sample.png --out sfv.mp4 --steps 1 --max-guidance 1
  # a read-only bundle: keep ONNX Runtime's optimised graphs elsewhere (the next start skips optimising)
  python -m runtime.generate --bundle /opt/bundle --image in.png --out clip.mp4 --ort-cache ~/.cache/sfv-ort
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
  # several images (or a directory of them): one clip each, out/<image name>.mp4, 4 clips per pass,
  # seeds 0, 1, 2, ... (--seed + the image's index)
  python -m runtime.generate --bundle bundle --image a.png b.jpg c.png --out out/ --steps 1 --max-guidance 1
  python -m runtime.generate --bundle bundle --image photos/ --out clips/ --format webp --batch 8

The built-in `tiny` model has random weights: its clips are coloured noise, which is expected.
Options left out take the model's defaults from the bundle's manifest."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.generate", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Generate a video clip from an image with an exported bundle (or a model "
                                            "directory); from several images, one clip each, made in batches.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", help="exported bundle directory (manifest.json + graphs/engines), or its manifest.json")
    src.add_argument("--model", help="run the PyTorch modules straight from a diffusers SVD directory or 'tiny' (needs torch)")
    p.add_argument("--unet", help="with --model: a UNet directory replacing the model's (e.g. an SF-V generator)")
    p.add_argument("--image", required=True, nargs="+", metavar="IMAGE",
                   help="conditioning image (PNG, JPEG, WebP, ...); several images or a directory of images make one "
                        "clip each (into the directory --out)")
    p.add_argument("--out", required=True, help="one image: clip.mp4 | clip.gif | clip.webp | clip.npy | a directory "
                                                "(PNG frames); several images: a directory, one clip per image")
    p.add_argument("--format", choices=FORMATS, help="several images: the clips' file format, named <image name>.<format> "
                                                     "in --out (default mp4); with one image it makes --out such a directory too")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, metavar="N",
                   help=f"several images: at most N clips per pass through the networks (default {DEFAULT_BATCH}); "
                        "each clip's seed is --seed plus the image's index")
    add_engine_arguments(p)
    add_arguments(p)
    p.add_argument("--noise", metavar="NPZ", help="explicit noise: an .npz with 'augmentation' [1,3,H,W] and 'latents' "
                                                  "[1,F,C,h,w] (unit normal; overrides --seed/--generator); --sampler lcm "
                                                  "also takes 'steps' [steps-1,1,F,C,h,w]")
    p.add_argument("--save-noise", metavar="NPZ", help="write the noise this run drew (for --noise elsewhere)")
    p.add_argument("--save-latents", metavar="NPY", help="also write the final latents [1,F,C,h,w] float32")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines (the result line is still printed)")
    return p


def add_engine_arguments(parser) -> None:
    """The flags that choose and tune the engines (``--backend``, ``--precision``, ``--providers``,
    ``--threads``, ``--ov-cache``): one definition for ``runtime.generate`` and ``serving.serve``."""
    p = parser
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
    p.add_argument("--ort-cache", metavar="DIR", help="ONNX Runtime's optimised graphs and the graphs' checked sha256, kept "
                                                      "for the next start (default: BUNDLE/ort-cache; skipped where not writable)")
    p.add_argument("--no-ort-cache", action="store_true", help="optimise and hash the graphs at this start, keep nothing")
    p.add_argument("--ov-cache", metavar="DIR", help="with --backend openvino: compiled-model cache (the next start skips compiling)")


@run_cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with quiet_logging(args.quiet):
        return _generate(args)


def _generate(args) -> int:
    # 1. Cheap checks first: nothing heavy loads before the inputs are known to be usable.
    if args.unet and not args.model:
        raise InputError("--unet goes with --model (a bundle's UNet is fixed at export; re-export with --unet)")
    if args.model and args.backend not in (None, "torch"):
        raise InputError(f"--model runs on the torch backend; for --backend {args.backend} export a bundle and pass --bundle")
    if args.ov_cache and args.backend != "openvino" and not (args.engines or args.recipe):
        raise InputError("--ov-cache goes with --backend openvino (or OpenVINO engines in --engines / --recipe)")
    if args.model and (args.engines or args.recipe):
        raise InputError("--engines and --recipe choose a bundle's engines; pass --bundle")
    if args.batch < 1:
        raise InputError(f"--batch must be a positive integer, got {args.batch}")
    images = image_paths(args.image)
    several = len(images) > 1 or any(Path(p).is_dir() for p in args.image) or args.format is not None
    if len(images) > 1:
        for flag in ("noise", "save_noise", "save_latents"):
            if getattr(args, flag):
                raise InputError(f"--{flag.replace('_', '-')} goes with one image (it holds one clip's arrays); "
                                 f"run that image alone")
    outputs = clip_paths(images, args.out, args.format) if several else [Path(args.out)]
    if not several:
        output_kind(args.out)
    for path in (*outputs, args.save_noise, args.save_latents):
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

    loaded = [load_image(p) for p in images]
    noise = None
    if len(images) == 1:
        noise = RecordingNoise(ExplicitNoise.load(args.noise) if args.noise else noise_source(options.generator, options.seed))

    # 2. Engines.
    if args.model:
        pipe = VideoPipeline.from_model(args.model, unet=args.unet)
    else:
        pipe = VideoPipeline.from_bundle(args.bundle, **engine_options(args))
    pipe.resolve(options)  # sizes and ranges checked before the engines activate

    # 3. Generate and write, a batch of clips per pass (seed + the image's index).
    with pipe:
        for start in range(0, len(loaded), args.batch):
            chunk = slice(start, start + args.batch)
            if noise is not None:
                results = [pipe(loaded[0], options, noise=noise, progress=not args.quiet)]
            else:
                seeds = [options.seed + i for i in range(start, min(start + args.batch, len(loaded)))]
                results = pipe(loaded[chunk], options, seeds=seeds, progress=not args.quiet)
            for result, out in zip(results, outputs[chunk]):
                path = write_video(result.frames, out, fps=result.options.fps)
                # The result is printed under --quiet too (which silences progress bars and log lines).
                seed = f", seed {result.options.seed}" if several else ""
                print(f"wrote {path}: {len(result.frames)} frames {result.frames.shape[2]}x{result.frames.shape[1]} "
                      f"at {result.options.fps} fps{seed}")
            print(format_timings(results[0].timings))
    if args.save_noise:
        save_noise(args.save_noise, noise.drawn["augmentation"], noise.drawn["latents"], noise.drawn.get("steps"))
    if args.save_latents:
        write_npy_atomic(args.save_latents, results[0].latents)
    return 0


def image_paths(paths: list[str]) -> list[Path]:
    """``--image``: the files given, a directory standing for the images in it (sorted by name,
    those whose extension Pillow reads); :class:`InputError` for a directory without images."""
    readable = PIL.Image.registered_extensions()
    out = []
    for text in paths:
        p = Path(text)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in readable)
            if not found:
                raise InputError(f"--image {p} is a directory without images (PNG, JPEG, WebP, ...); pass image files "
                                 "or a directory holding them")
            out.extend(found)
        else:
            out.append(p)  # load_image says what is wrong with a missing or unreadable file
    return out


def clip_paths(images: list[Path], out: str, fmt: str | None) -> list[Path]:
    """One clip path per image, ``out/<image stem>.<fmt>`` (default mp4); :class:`InputError` when
    ``out`` is a file or names one, or two images have the same name."""
    directory = Path(out)
    suffixes = {f".{f}" for f in FORMATS}
    if directory.exists() and not directory.is_dir():
        raise InputError(f"--out {directory} is a file, but several images (or --format) write one clip per image into "
                         "a directory; pass --out DIR")
    if not directory.exists() and directory.suffix.lower() in suffixes:
        raise InputError(f"--out {directory} names a file, but several images (or --format) write one clip per image "
                         f"into a directory (DIR/<image name>.{fmt or 'mp4'}); pass --out DIR, or one image for one file")
    paths: dict[Path, Path] = {}
    for image in images:
        path = directory / f"{image.stem}.{fmt or 'mp4'}"
        if path in paths:
            raise InputError(f"{paths[path]} and {image} would both write {path}; rename one, or run them separately")
        paths[path] = image
    return list(paths)


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
    """One line: seconds per stage, the UNet's calls, and the total (of a pass that made ``batch`` clips)."""
    parts = [f"{stage} {timings[stage]:.2f}s" + (f" ({timings['unet_calls']} calls)" if stage == "unet" else "")
             for stage in STAGES if stage in timings]
    batch = timings.get("batch", 1)
    clips = f" for {batch} clips" if batch > 1 else ""
    return "timings: " + " | ".join(parts) + f" | total {timings['total']:.2f}s{clips}"


def engine_options(args) -> dict:
    """``VideoPipeline.from_bundle``'s keyword arguments from the flags of :func:`add_engine_arguments`."""
    if args.ort_cache and args.no_ort_cache:
        raise InputError("--ort-cache DIR and --no-ort-cache contradict each other; pass one")
    return dict(backend=args.backend or "onnxruntime", precision=args.precision, providers=args.providers,
                threads=args.threads, engines=_engine_choices(args), ort_cache=not args.no_ort_cache,
                ort_cache_dir=args.ort_cache, **_openvino_options(args))


def _engine_choices(args) -> dict | None:
    """Per-network engines: the recipe's (--recipe), then --engines on top of them."""
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
