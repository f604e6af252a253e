"""Image loading and preprocessing against diffusers' SVD pipeline code paths."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from networks.wrappers import ClipPreprocessNet
from contract.specs import ModelConfig
from runtime.conditioning import augment_image
from runtime.errors import InputError
from runtime.preprocess import load_image, pixels, vae_pixels


@pytest.fixture(scope="module")
def image():
    rng = np.random.RandomState(0)
    return PIL.Image.fromarray((rng.rand(40, 56, 3) * 255).astype(np.uint8))


def test_clip_pixels_equal_svd_pipeline(image, tiny_model_dir):
    """Same tensor as StableVideoDiffusionPipeline._encode_image feeds CLIP (with the model's processor)."""
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
    from diffusers.video_processor import VideoProcessor
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(tiny_model_dir / "feature_extractor")
    vp = VideoProcessor(do_resize=True, vae_scale_factor=8)
    ref = vp.numpy_to_pt(vp.pil_to_numpy(image)) * 2.0 - 1.0
    ref = (_resize_with_antialiasing(ref, (224, 224)) + 1.0) / 2.0
    ref = processor(images=ref, do_normalize=True, do_center_crop=False, do_resize=False, do_rescale=False,
                    return_tensors="pt").pixel_values
    net = ClipPreprocessNet(224, tuple(processor.image_mean), tuple(processor.image_std))
    ours = net(torch.from_numpy(pixels(image).copy()))  # a writable copy for torch
    assert ours.shape == (1, 3, 224, 224) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [(2, 2), (40, 56), (240, 320), (700, 1200)])
def test_clip_preprocess_graph_matches_its_reference(size):
    """The bundle's clip_preprocess graph (any image size, one graph) against diffusers' resize."""
    import onnxruntime as ort

    from export.preprocess_graph import build_clip_preprocess
    from contract.specs import build_specs

    config = ModelConfig()
    spec = build_specs(config)["clip_preprocess"]
    session = ort.InferenceSession(build_clip_preprocess(spec, config).SerializeToString(), providers=["CPUExecutionProvider"])
    px = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    (got,) = session.run(None, {"pixels": px})
    want = ClipPreprocessNet(224, config.image_mean, config.image_std)(torch.from_numpy(px)).numpy()
    assert got.shape == want.shape == (1, 3, 224, 224)
    assert np.abs(got - want).max() <= spec.atol


def test_vae_pixels_resize_and_range(image):
    from diffusers.video_processor import VideoProcessor

    x = vae_pixels(image, 48, 64)
    assert x.shape == (1, 3, 48, 64) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.1
    ref = VideoProcessor(do_resize=True, vae_scale_factor=8).preprocess(image, height=48, width=64).numpy()
    assert np.array_equal(x, ref)  # diffusers' VideoProcessor, bit for bit


def test_noise_augmentation_adds_scaled_noise():
    x = np.zeros((1, 3, 4, 4), np.float32)
    noise = np.random.default_rng(1).standard_normal(x.shape, dtype=np.float32)
    a = augment_image(x, 0.02, noise)
    assert a.dtype == np.float32 and np.array_equal(a, np.float32(0.02) * noise)
    assert np.array_equal(augment_image(x, 0.0, noise), x)


def test_tiny_and_transparent_images(caplog):
    with pytest.raises(InputError, match="at least 2 pixels"):
        load_image(np.zeros((1, 40, 3), np.uint8))
    with caplog.at_level("WARNING"):
        assert load_image(np.zeros((4, 4, 4), np.uint8)).mode == "RGB"
    assert "alpha" in caplog.text
    with caplog.at_level("WARNING"):
        vae_pixels(load_image(np.zeros((240, 320, 3), np.uint8)), 64, 64)
    assert "aspect ratio" in caplog.text


def test_load_image_sources(tmp_path, image):
    path = tmp_path / "in.png"
    image.save(path)
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(image))
    rgba = np.dstack([np.asarray(image), np.full(image.size[::-1], 255, np.uint8)])
    assert load_image(rgba).mode == "RGB"
    assert load_image(image.convert("L")).mode == "RGB"


def test_load_image_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="not a readable image"):
        load_image(bad)
    with pytest.raises(InputError, match="uint8"):
        load_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path)  # a directory


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16_bit_png_becomes_its_high_byte(tmp_path, channels):
    """The RGB8 rule (module docstring), which sfv-generate follows too: value >> 8, grey repeated,
    alpha dropped. Pillow's own I;16 -> RGB conversion clips grey at 255 instead."""
    from png16 import write_png16

    rng = np.random.default_rng(channels)
    samples = rng.integers(0, 65536, (6, 7) if channels == 1 else (6, 7, channels), dtype=np.uint16)
    samples.flat[:4] = [0, 255, 256, 65535]  # the byte boundaries
    image = load_image(write_png16(tmp_path / "in.png", samples))
    high = (samples >> 8).astype(np.uint8).reshape(6, 7, channels)
    want = np.repeat(high[..., :1], 3, axis=2) if channels <= 2 else high[..., :3]
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), want)
