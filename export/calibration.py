"""Calibration inputs for a quantized UNet, captured from the pipeline's own UNet calls.

A quantized graph is only as good as the activation ranges it was calibrated on, so the inputs
are the real ones: the bundle's fp32 pipeline runs on a few images with the UNet engine wrapped
in :class:`RecordingEngine`, which keeps a copy of every call's inputs and passes the call on
unchanged. Recorded:

- SF-V's one step (no guidance, batch 1) at ``sigma_max`` for every image;
- SVD's 25-step guided schedule (batch 2) for the first image(s), every ``svd_every``-th call,
  so that the levels from sigma_max down to sigma_min are covered.

The calls are split into a calibration set and a held-out validation set (the last image's
SF-V call and every ``holdout``-th SVD call).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from contract.errors import ShapeError
from engines.base import Engine
from engines.factory import pipeline_engines
from runtime.pipeline import VideoPipeline

log = logging.getLogger(__name__)


def parse_calibration_size(text: str | None) -> dict:
    """``"128x128x14"`` -> ``{"height": 128, "width": 128, "frames": 14}``."""
    if not text:
        return {}
    parts = text.lower().split("x")
    if len(parts) not in (2, 3) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ShapeError(f"--calibration-size {text!r}: give HEIGHTxWIDTH or HEIGHTxWIDTHxFRAMES, e.g. 128x128x14")
    return dict(zip(("height", "width", "frames"), map(int, parts)))


class RecordingEngine(Engine):
    """Wraps an engine: every call's inputs are copied to ``recorded`` (float32 numpy), then run by ``inner``."""

    def __init__(self, inner: Engine):
        super().__init__(inner.spec, inner.precision)
        self.inner = inner
        self.backend = inner.backend
        self.recorded: list[dict[str, np.ndarray]] = []

    def _activate(self) -> None:
        self.inner.activate()

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _run(self, inputs: Mapping):
        self.recorded.append({k: np.array(v, dtype=np.float32, copy=True) for k, v in inputs.items()})
        return self.inner.run(inputs)


@dataclass
class Calibration:
    """Captured UNet inputs: ``calibrate`` feeds the calibrator, ``validate`` checks the result."""

    calibrate: list[dict[str, np.ndarray]] = field(default_factory=list)
    validate: list[dict[str, np.ndarray]] = field(default_factory=list)

    def save(self, path) -> None:
        arrays = {}
        for part in ("calibrate", "validate"):
            for i, feeds in enumerate(getattr(self, part)):
                for k, v in feeds.items():
                    arrays[f"{part}/{i}/{k}"] = v
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path) -> "Calibration":
        out = cls()
        with np.load(path) as data:
            for key in sorted(data.files, key=lambda k: (k.split("/")[0], int(k.split("/")[1]), k)):
                part, i, name = key.split("/", 2)
                items = getattr(out, part)
                while len(items) <= int(i):
                    items.append({})
                items[int(i)][name] = data[key]
        return out


def synthetic_images(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` distinct uint8 ``[H, W, 3]`` images: smooth colour fields, shapes and texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    images = []
    for _ in range(count):
        base = np.stack([np.sin(x / width * rng.uniform(1, 6) + rng.uniform(0, 6)) * np.cos(y / height * rng.uniform(1, 6))
                         for _ in range(3)], axis=-1)
        cy, cx, r = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width, rng.uniform(0.1, 0.3) * min(height, width)
        disc = ((y - cy) ** 2 + (x - cx) ** 2 < r * r)[..., None] * rng.uniform(-1, 1, 3)
        texture = rng.normal(0, 0.15, (height, width, 3))
        img = (base * 0.6 + disc + texture) * 0.5 + 0.5
        images.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return images


def capture_calibration(
    bundle,
    images: int = 4,
    frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    svd_images: int = 1,
    svd_steps: int = 25,
    svd_every: int = 1,
    holdout: int = 5,
    threads: int | None = None,
) -> Calibration:
    """Run the bundle's fp32 pipeline (ONNX Runtime) and record the UNet's inputs.

    ``frames``/``height``/``width`` default to the manifest's (the full-size SVD default is
    576x1024; pass a smaller size to keep a CPU capture short).
    """
    config = bundle.config
    height = height or config.default_height
    width = width or config.default_width
    frames = frames or config.num_frames
    engines = pipeline_engines(bundle, "onnxruntime", threads=threads)
    recorder = RecordingEngine(engines.unet)
    engines = replace(engines, unet=recorder)  # engines are name-keyed: the pipeline runs the recorder
    pictures = synthetic_images(images + 1, height, width)
    calibration = Calibration()
    size = dict(num_frames=frames, height=height, width=width, output="latents", progress=False)
    with VideoPipeline(engines) as pipe:
        for i, image in enumerate(pictures):
            recorder.recorded.clear()
            pipe(image, steps=1, min_guidance=1.0, max_guidance=1.0, seed=i, **size)  # SF-V: one step at sigma_max
            (calibration.validate if i == images else calibration.calibrate).extend(recorder.recorded)
        for i in range(svd_images):
            recorder.recorded.clear()
            pipe(pictures[i], steps=svd_steps, seed=100 + i, **size)  # SVD: guided, batch 2, every level
            kept = recorder.recorded[::svd_every]
            for j, feeds in enumerate(kept):
                (calibration.validate if holdout and j % holdout == holdout // 2 else calibration.calibrate).append(feeds)
    recorder.recorded.clear()
    log.info("captured %d calibration and %d validation UNet calls", len(calibration.calibrate), len(calibration.validate))
    return calibration
