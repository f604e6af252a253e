"""``python -m runtime.generate``: one image in, one clip out.

    python -m runtime.generate --bundle B --image in.png --out clip.mp4 --backend onnxruntime
    python -m runtime.generate --model tiny --image in.png --out frames/ --steps 1 --max-guidance 1
    python -m runtime.generate --bundle B --image in.png --out clip.npy --backend tensorrt --frames 14

Everything is checked before the engines load (the image, the output path's kind, the sizes),
and the clip is written atomically, so a failed run leaves nothing at ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from export.cli import run_cli
from export.specs import check_resolution
from runtime.errors import InputError

log = logging.getLogger(__name__)

STAGES = ("preprocess", "image_encoder", "vae_encoder", "unet", "vae_decoder")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.generate", description="Generate a video clip from one image with an exported bundle or a model directory.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", help="exported bundle directory (manifest.json + graphs/engines)")
    src.add_argument("--model", help="run the torch backend straight from a diffusers SVD directory or 'tiny'")
    p.add_argument("--unet", help="with --model: a UNet directory replacing the model's (e.g. an SF-V generator)")
    p.add_argument("--image", required=True, help="conditioning image (PNG, JPEG, WebP, ...)")
    p.add_argument("--out", required=True, help="clip.mp4 | clip.gif | clip.webp | clip.npy | a directory (PNG frames)")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt"),
                   help="engines for --bundle (default onnxruntime); --model runs on torch")
    p.add_argument("--providers", help="ONNX Runtime execution providers, comma-separated: cpu (default), cuda, tensorrt")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads on the CPU")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default 25; 1 with --max-guidance 1 is SF-V's one step)")
    p.add_argument("--frames", type=int, help="frames to generate (default: the model's, 14 for SVD)")
    p.add_argument("--height", type=int, help="pixels (default: the model's, 576 for SVD)")
    p.add_argument("--width", type=int, help="pixels (default: the model's, 1024 for SVD)")
    p.add_argument("--fps", type=int, default=7, help="frame rate of the file and the fps conditioning (default 7)")
    p.add_argument("--motion-bucket-id", type=int, default=127, help="motion conditioning (default 127; higher moves more)")
    p.add_argument("--noise-aug", type=float, default=0.02, help="noise added to the conditioning image (default 0.02)")
    p.add_argument("--min-guidance", type=float, default=1.0, help="guidance weight of the first frame (default 1.0)")
    p.add_argument("--max-guidance", type=float, default=3.0, help="guidance weight of the last frame (default 3.0; <= 1 turns CFG off)")
    p.add_argument("--decode-chunk", type=int, help="frames per VAE decoder call (default: all frames)")
    p.add_argument("--seed", type=int, default=0, help="seed of the host noise generator (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


@run_cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.video import output_kind, write_video

    # 1. Cheap checks first: nothing heavy loads before the inputs are known to be usable.
    if args.unet and not args.model:
        raise InputError("--unet goes with --model (a bundle's UNet is fixed at export; re-export with --unet)")
    if args.model and args.backend not in (None, "torch"):
        raise InputError(f"--model runs on the torch backend; for --backend {args.backend} export a bundle and pass --bundle")
    output_kind(args.out)
    from runtime.pipeline import VideoPipeline
    from runtime.preprocess import load_image

    image = load_image(args.image)

    # 2. Engines.
    if args.model:
        pipe = VideoPipeline.from_model(args.model, unet=args.unet)
    else:
        pipe = VideoPipeline.from_bundle(args.bundle, backend=args.backend or "onnxruntime", providers=args.providers, threads=args.threads)

    # 3. Generate and write (sizes checked before the engines activate).
    check_resolution(pipe.config, args.height or pipe.config.default_height, args.width or pipe.config.default_width)
    with pipe:
        result = pipe(
            image,
            num_frames=args.frames,
            height=args.height,
            width=args.width,
            steps=args.steps,
            min_guidance=args.min_guidance,
            max_guidance=args.max_guidance,
            fps=args.fps,
            motion_bucket_id=args.motion_bucket_id,
            noise_aug_strength=args.noise_aug,
            decode_chunk_size=args.decode_chunk,
            seed=args.seed,
            progress=not args.quiet,
        )
    path = write_video(result.frames, args.out, fps=args.fps)
    print(f"wrote {path}: {len(result.frames)} frames {result.frames.shape[2]}x{result.frames.shape[1]} at {args.fps} fps")
    print(format_timings(result.timings))
    return 0


def format_timings(timings: dict) -> str:
    """One line: seconds per stage, the UNet's calls, and the total."""
    parts = [f"{stage} {timings[stage]:.2f}s" for stage in STAGES if stage in timings]
    parts[STAGES.index("unet")] += f" ({timings['unet_calls']} calls)"
    return "timings: " + " | ".join(parts) + f" | total {timings['total']:.2f}s"


if __name__ == "__main__":
    sys.exit(main())
