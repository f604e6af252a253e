"""Classifier-free guidance and chunked decoding, each on its own, through the public runtime API
(``runtime.denoiser.SVDDenoiser``, ``runtime.conditioning.guidance_scales``,
``VideoPipeline.decode``) with the tiny random UNet and VAE decoder.

Inputs are built in the runtime's own array type (whatever ``guidance_scales`` returns), and
results are compared as numpy arrays.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.conditioning import guidance_scales
from runtime.denoiser import SVDDenoiser
from runtime.pipeline import VideoPipeline

FRAMES = 3


def _runtime_array(a: np.ndarray):
    """``a`` as the array type the runtime computes with."""
    kind = type(guidance_scales(1.0, 3.0, 2))
    return torch.from_numpy(a) if issubclass(kind, torch.Tensor) else np.asarray(a)


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _engine(engines, name: str):
    return engines[name] if hasattr(engines, "__getitem__") else getattr(engines, name)


@pytest.fixture(scope="module")
def pipe(tiny_model):
    with VideoPipeline.from_model(tiny_model) as p:
        yield p


@pytest.fixture(scope="module")
def conditioning(tiny_model):
    """Noisy latents ``[1, F, C, h, w]``, an embedding ``[1, D]``, an image latent ``[1, C, h, w]``, time ids ``[1, 3]``."""
    cfg = tiny_model.config
    rng = np.random.default_rng(0)
    h = 32 // cfg.vae_scale_factor
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    return dict(
        x=f32(1, FRAMES, cfg.latent_channels, h, h) * 3,
        embeds=f32(1, cfg.embed_dim),
        latent=f32(1, cfg.latent_channels, h, h),
        time_ids=np.array([[6.0, 127.0, 0.02]], dtype=np.float32),
    )


def _denoise(pipe, c, embeds, latent, guidance=None, sigma=2.5) -> np.ndarray:
    denoiser = SVDDenoiser(
        _engine(pipe.engines, "unet"), _runtime_array(embeds), _runtime_array(latent), _runtime_array(c["time_ids"]),
        FRAMES, guidance,
    )
    return _np(denoiser(_runtime_array(c["x"]), _runtime_array(np.array(sigma, dtype=np.float32))))


def test_guidance_weights_rise_linearly_per_frame():
    assert guidance_scales(1.0, 1.0, FRAMES) is None  # max <= 1: no guidance, batch 1
    assert np.allclose(_np(guidance_scales(1.0, 3.0, FRAMES)), [1.0, 2.0, 3.0])


def test_guided_denoiser_combines_unconditional_and_conditional_per_frame(pipe, conditioning):
    """``D = D_u + w_f (D_c - D_u)`` frame by frame, where ``D_u`` has a zero embedding AND a zero
    image latent (SVD's unconditional half) and ``D_c`` the real ones; ``D`` is linear in the UNet
    output, so this holds exactly up to rounding. It fails if the halves swap, the weights run
    backwards or per channel, or the unconditional half keeps either conditioning input."""
    c = conditioning
    weights = guidance_scales(1.0, 3.0, FRAMES)
    guided = _denoise(pipe, c, c["embeds"], c["latent"], weights)
    cond = _denoise(pipe, c, c["embeds"], c["latent"])
    uncond = _denoise(pipe, c, np.zeros_like(c["embeds"]), np.zeros_like(c["latent"]))
    w = _np(weights).reshape(1, FRAMES, 1, 1, 1)
    assert np.abs(cond - uncond).max() > 1e-2  # the tiny UNet does depend on its conditioning
    np.testing.assert_allclose(guided, uncond + w * (cond - uncond), rtol=0, atol=1e-5)
    # each conditioning input matters on its own, so zeroing only one of them would be caught
    for embeds, latent in ((np.zeros_like(c["embeds"]), c["latent"]), (c["embeds"], np.zeros_like(c["latent"]))):
        assert np.abs(_denoise(pipe, c, embeds, latent) - uncond).max() > 1e-3


def test_weight_one_everywhere_is_the_conditional_prediction(pipe, conditioning):
    c = conditioning
    ones = _runtime_array(np.ones(FRAMES, dtype=np.float32))
    np.testing.assert_allclose(
        _denoise(pipe, c, c["embeds"], c["latent"], ones), _denoise(pipe, c, c["embeds"], c["latent"]), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("chunk", [1, 2, FRAMES, FRAMES + 2])
def test_decoding_in_chunks_decodes_each_chunk_on_its_own(pipe, conditioning, chunk):
    """Frames ``[F, H, W, 3]`` from ``decode(latents, chunk)`` are those of decoding every chunk
    of ``chunk`` frames separately, in order, the last one partial; and a single chunk is the
    VAE decoder's output for ``latents / scaling_factor``."""
    latents = conditioning["x"] / 3
    frames = pipe.decode(_runtime_array(latents), chunk)
    assert frames.shape == (FRAMES, 32, 32, 3) and frames.dtype == np.uint8
    pieces = [pipe.decode(_runtime_array(latents[:, s : s + chunk]), chunk) for s in range(0, FRAMES, chunk)]
    np.testing.assert_array_equal(frames, np.concatenate(pieces))


def test_one_chunk_is_the_decoder_output_of_unscaled_latents(pipe, conditioning):
    latents = conditioning["x"] / 3
    z = latents[0] / pipe.config.scaling_factor  # [F, C, h, w]
    sample = _np(_engine(pipe.engines, "vae_decoder").run({"latent": _runtime_array(z)})["sample"])  # [F, 3, H, W] in [-1, 1]
    want = np.clip(np.round((sample + 1) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    got = pipe.decode(_runtime_array(latents), FRAMES)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # rounding convention of to_uint8
    assert np.abs(pipe.decode(_runtime_array(latents), 1).astype(int) - want.astype(int)).max() > 1  # chunks differ
