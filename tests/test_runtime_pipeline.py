"""The Python API: results, timings, seeds, options, lifecycle and errors (torch backend, tiny model)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from export.errors import ShapeError
from export.specs import NETWORKS
from runtime.errors import InputError
from runtime.pipeline import VideoPipeline, VideoResult

ONE_STEP = dict(steps=1, min_guidance=1.0, max_guidance=1.0, progress=False)


@pytest.fixture(scope="module")
def pipe(tiny_model):
    return VideoPipeline.from_model(tiny_model)


@pytest.fixture(scope="module")
def image():
    return PIL.Image.fromarray((np.random.RandomState(3).rand(32, 48, 3) * 255).astype(np.uint8))


def test_result_and_timings(pipe, image):
    result = pipe(image, num_frames=4, height=32, width=48, steps=2, seed=1, progress=False)
    assert isinstance(result, VideoResult)
    assert result.frames.shape == (4, 32, 48, 3) and result.frames.dtype == np.uint8
    assert result.latents.shape == (1, 4, 4, 4, 6) and result.latents.dtype == torch.float32
    t = result.timings
    assert set(t) == {"preprocess", "image_encoder", "vae_encoder", "unet", "vae_decoder", "total", "unet_calls", "steps"}
    assert t["unet_calls"] == 2 and t["steps"] == 2
    stages = sum(t[k] for k in ("preprocess", "image_encoder", "vae_encoder", "unet", "vae_decoder"))
    assert all(t[k] > 0 for k in ("image_encoder", "vae_encoder", "unet", "vae_decoder")) and stages <= t["total"]
    images = result.images()
    assert len(images) == 4 and images[0].size == (48, 32)


def test_defaults_come_from_the_model(pipe, image):
    result = pipe(image, output="latents", **ONE_STEP)
    cfg = pipe.config
    assert result.latents.shape == (1, cfg.num_frames, 4, cfg.default_height // 8, cfg.default_width // 8)
    assert result.frames is None and result.timings["vae_decoder"] == 0.0
    with pytest.raises(InputError, match="latents only"):
        result.images()


def test_seed_reproducible_and_distinct(pipe, image):
    a = pipe(image, num_frames=2, seed=5, output="latents", **ONE_STEP).latents
    b = pipe(image, num_frames=2, seed=5, output="latents", **ONE_STEP).latents
    c = pipe(image, num_frames=2, seed=6, output="latents", **ONE_STEP).latents
    assert torch.equal(a, b) and (a - c).abs().max() > 1e-2


def test_image_sources_agree(pipe, image, tmp_path):
    path = tmp_path / "in.png"
    image.save(path)
    kw = dict(num_frames=2, output="latents", **ONE_STEP)
    ref = pipe(image, **kw).latents
    assert torch.equal(pipe(str(path), **kw).latents, ref)
    assert torch.equal(pipe(np.asarray(image), **kw).latents, ref)


def test_conditioning_changes_the_output(pipe, image):
    kw = dict(num_frames=2, output="latents", **ONE_STEP)
    ref = pipe(image, **kw).latents
    for change in (dict(motion_bucket_id=20), dict(fps=12), dict(noise_aug_strength=0.2)):
        assert (pipe(image, **kw, **change).latents - ref).abs().max() > 1e-4, change


def test_guidance_doubles_the_batch_only_when_on(pipe, image):
    seen = []
    unet = pipe.engines["unet"]
    original = unet.run
    unet.run = lambda inputs: seen.append(inputs["sample"].shape[0]) or original(inputs)
    try:
        pipe(image, num_frames=2, steps=2, max_guidance=2.0, output="latents", progress=False)
        pipe(image, num_frames=2, steps=2, max_guidance=1.0, output="latents", progress=False)
    finally:
        del unet.run
    assert seen == [2, 2, 1, 1]


def test_decode_chunks_shape(pipe, image):
    result = pipe(image, num_frames=5, height=32, width=32, decode_chunk_size=2, **ONE_STEP)
    assert result.frames.shape == (5, 32, 32, 3)


@pytest.mark.parametrize(
    "options,error,match",
    [
        (dict(height=40), ShapeError, "multiples of 16"),
        (dict(width=8), ShapeError, "multiples of 16"),
        (dict(num_frames=0), InputError, "num_frames"),
        (dict(height=0), ShapeError, "multiples of 16"),
        (dict(steps=0), InputError, "steps"),
        (dict(decode_chunk_size=-1), InputError, "decode_chunk_size"),
        (dict(min_guidance=3.0, max_guidance=2.0), InputError, "swap"),
        (dict(output="pil"), InputError, "output"),
    ],
)
def test_option_errors(pipe, image, options, error, match):
    kw = dict(num_frames=2, steps=1, output="latents", progress=False) | options
    with pytest.raises(error, match=match):
        pipe(image, **kw)


def test_context_manager_activates_and_releases(tiny_bundle, image):
    pipe = VideoPipeline.from_bundle(tiny_bundle, backend="onnxruntime", threads=1)
    assert list(pipe.engines) == list(NETWORKS) and not any(e.active for e in pipe.engines.values())
    with pipe as p:
        assert p is pipe and all(e.active for e in pipe.engines.values())
        p(image, num_frames=2, output="latents", **ONE_STEP)
    assert not any(e.active for e in pipe.engines.values())


def test_missing_engine_is_an_error(pipe):
    engines = dict(pipe.engines)
    del engines["vae_decoder"]
    with pytest.raises(InputError, match="vae_decoder"):
        VideoPipeline(engines, pipe.config)
