"""Image loading and preprocessing against diffusers' SVD pipeline code paths."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from export.specs import ModelConfig
from runtime.conditioning import augment_image
from runtime.errors import InputError
from runtime.preprocess import clip_pixels, load_image, vae_pixels


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
    ours = clip_pixels(image, ModelConfig(image_mean=tuple(processor.image_mean), image_std=tuple(processor.image_std)))
    assert ours.shape == (1, 3, 224, 224) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_vae_pixels_resize_and_range(image):
    x = vae_pixels(image, ModelConfig(), 48, 64)
    assert x.shape == (1, 3, 48, 64) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.1


def test_noise_augmentation_draws_from_the_generator():
    x = torch.zeros(1, 3, 4, 4)
    a = augment_image(x, 0.02, torch.Generator().manual_seed(1))
    b = augment_image(x, 0.02, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    torch.testing.assert_close(a, 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(augment_image(x, 0.0, torch.Generator()), x)


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
