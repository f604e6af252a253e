"""The Python API: results, timings, seeds, options, lifecycle and errors (torch backend, tiny model)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

from contract.errors import ShapeError
from runtime.errors import InputError
from runtime.options import GenerateOptions
from runtime.pipeline import STAGES, VideoPipeline, VideoResult

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
    assert result.latents.shape == (1, 4, 4, 4, 6) and result.latents.dtype == np.float32
    t = result.timings
    assert set(t) == set(STAGES) | {"total", "unet_calls", "steps", "batch"}
    assert t["unet_calls"] == 2 and t["steps"] == 2 and t["batch"] == 1
    assert result.options.steps == 2 and result.options.fps == pipe.config.fps  # defaults filled in
    stages = sum(t[k] for k in STAGES)
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
    assert np.array_equal(a, b) and np.abs(a - c).max() > 1e-2


def test_image_sources_agree(pipe, image, tmp_path):
    path = tmp_path / "in.png"
    image.save(path)
    kw = dict(num_frames=2, output="latents", **ONE_STEP)
    ref = pipe(image, **kw).latents
    assert np.array_equal(pipe(str(path), **kw).latents, ref)
    assert np.array_equal(pipe(np.asarray(image), **kw).latents, ref)


def test_conditioning_changes_the_output(pipe, image):
    kw = dict(num_frames=2, output="latents", **ONE_STEP)
    ref = pipe(image, **kw).latents
    for change in (dict(motion_bucket_id=20), dict(fps=12), dict(noise_aug_strength=0.2)):
        assert np.abs(pipe(image, **kw, **change).latents - ref).max() > 1e-4, change


def test_guidance_doubles_the_batch_only_when_on(pipe, image):
    seen = []
    unet = pipe.engines.unet
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
        (dict(num_frames=0), InputError, r"num_frames \(--frames\)"),
        (dict(height=0), ShapeError, "multiples of 16"),
        (dict(steps=0), InputError, r"steps \(--steps\)"),
        (dict(decode_chunk_size=-1), InputError, r"decode_chunk_size \(--decode-chunk\)"),
        (dict(min_guidance=3.0, max_guidance=2.0), InputError, "swap"),
        (dict(output="pil"), InputError, "output"),
        (dict(generator="mt"), InputError, "generator"),
        (dict(colour="red"), InputError, "unknown generation option"),
    ],
)
def test_option_errors(pipe, image, options, error, match):
    kw = dict(num_frames=2, steps=1, output="latents", progress=False) | options
    with pytest.raises(error, match=match):
        pipe(image, **kw)


def test_context_manager_activates_and_releases(tiny_bundle, image):
    pipe = VideoPipeline.from_bundle(tiny_bundle, backend="onnxruntime", threads=1)
    assert [e.spec.name for e in pipe.engines.all()] == ["clip_preprocess", "image_encoder", "vae_encoder", "unet", "vae_decoder"]
    assert not any(e.active for e in pipe.engines.all())
    with pipe as p:
        assert p is pipe and all(e.active for e in pipe.engines.all())
        p(image, num_frames=2, output="latents", **ONE_STEP)
    assert not any(e.active for e in pipe.engines.all())


def test_options_object_and_overrides_agree(pipe, image):
    opts = GenerateOptions(num_frames=2, steps=1, max_guidance=1.0, seed=4)
    a = pipe(image, opts, output="latents", progress=False).latents
    b = pipe(image, num_frames=2, steps=1, max_guidance=1.0, seed=4, output="latents", progress=False).latents
    assert np.array_equal(a, b)


def test_engine_calls_and_bytes_are_counted(pipe, image):
    unet = pipe.engines.unet
    before = unet.calls, unet.bytes_in
    pipe(image, num_frames=2, steps=3, max_guidance=2.0, output="latents", progress=False)
    assert unet.calls - before[0] == 3 and unet.bytes_in > before[1]
