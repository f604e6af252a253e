"""The sampler's schedule, scalings, Euler step and guidance weights against diffusers' own values
for SVD's scheduler config (EulerDiscreteScheduler: v-prediction, continuous timesteps,
'leading' spacing, Karras sigmas)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from networks.models import SVD_SCHEDULER_CONFIG
from runtime.conditioning import added_time_ids, guidance_scales
from runtime.denoiser import c_noise, denoised_from_output, scale_input
from runtime.sampling import initial_noise_scale, karras_sigmas, sample_euler


def _scheduler(steps: int) -> EulerDiscreteScheduler:
    scheduler = EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(steps)
    return scheduler


@pytest.mark.parametrize("steps", [1, 2, 4, 25, 50])
def test_schedule_equals_diffusers(steps):
    scheduler = _scheduler(steps)
    sigmas = karras_sigmas(steps, SVD_SCHEDULER_CONFIG["sigma_min"], SVD_SCHEDULER_CONFIG["sigma_max"])
    assert sigmas.dtype == np.float32 and sigmas.shape == (steps + 1,)
    assert np.array_equal(sigmas, scheduler.sigmas.numpy())
    assert np.float32(initial_noise_scale(sigmas)) == np.float32(scheduler.init_noise_sigma)
    assert sigmas[0] == pytest.approx(700.0) and sigmas[-1] == 0.0
    if steps > 1:
        assert sigmas[-2] == pytest.approx(0.002)


@pytest.mark.parametrize("steps", [1, 2, 4, 16, 25, 50])
def test_timesteps_within_one_float32_ulp_of_diffusers(steps):
    """c_noise is 0.25 ln(sigma) in float64 rounded once (portable to any libm, the C++ runtime's too);
    diffusers takes torch's float32 log, which is off by one ulp at some levels."""
    ours = c_noise(karras_sigmas(steps)[:-1])
    theirs = _scheduler(steps).timesteps.numpy()
    assert ours.dtype == np.float32
    ulps = np.abs(ours.view(np.int32).astype(np.int64) - theirs.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1
    exact = 0.25 * np.log(karras_sigmas(steps)[:-1].astype(np.float64))
    assert np.array_equal(ours, exact.astype(np.float32))


def test_c_noise_same_on_torch_and_numpy():
    """Training (torch) and the runtime (numpy) feed the UNet the same timestep."""
    sigmas = karras_sigmas(50)[:-1]
    assert np.array_equal(c_noise(torch.from_numpy(sigmas)).numpy(), c_noise(sigmas))


def test_one_step_schedule_is_sigma_max_then_zero():
    assert karras_sigmas(1).tolist() == [700.0, 0.0]


@pytest.mark.parametrize("steps", [1, 3])
def test_scalings_and_euler_step_equal_diffusers(steps):
    """c_in, the v-prediction denoised estimate and the Euler step, bit for bit, at every sigma."""
    scheduler = _scheduler(steps)
    sigmas = karras_sigmas(steps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 4, 2, 2, generator=g) * torch.tensor(initial_noise_scale(sigmas))
    for i, t in enumerate(scheduler.timesteps):
        F = torch.randn(x.shape, generator=g)
        assert np.array_equal(scale_input(x.numpy(), sigmas[i]), scheduler.scale_model_input(x, t).numpy())
        step = scheduler.step(F, t, x)
        assert np.array_equal(denoised_from_output(F.numpy(), x.numpy(), sigmas[i]), step.pred_original_sample.numpy())
        ours = sample_euler(lambda x_, s_: denoised_from_output(F.numpy(), x_, s_), x.numpy(), sigmas[i : i + 2])
        assert np.array_equal(ours, step.prev_sample.numpy())
        # the same functions on torch tensors (training's evaluation) give the same bits
        assert torch.equal(sample_euler(lambda x_, s_: denoised_from_output(F, x_, s_), x, torch.from_numpy(sigmas[i : i + 2])),
                           step.prev_sample)
        x = step.prev_sample


def test_edm_scalings_values():
    """c_skip, c_out, c_in at sigma = 1 from the closed forms (SF-V paper Eq. 6, v-prediction form)."""
    sigma = np.float32(1.0)
    x, F = np.float32(2.0), np.float32(3.0)
    assert scale_input(x, sigma) == pytest.approx(2.0 / 2**0.5)
    assert denoised_from_output(F, x, sigma) == pytest.approx(0.5 * 2.0 - 3.0 / 2**0.5)
    assert c_noise(np.float32(700.0)) == pytest.approx(0.25 * np.log(700.0))


def test_one_step_euler_returns_the_denoised_estimate():
    sigmas = karras_sigmas(1)
    x = np.full((1, 2, 4, 2, 2), 700.0, np.float32)
    target = np.linspace(-1, 1, x.size, dtype=np.float32).reshape(x.shape)
    out = sample_euler(lambda x_, s_: target, x, sigmas)
    np.testing.assert_allclose(out, target, atol=1e-4, rtol=0)  # x - (x - D) at |x| = 700 in float32


def test_sampler_calls_back_once_per_step():
    seen = []
    sample_euler(lambda x_, s_: x_ * 0, np.ones((1, 2, 4, 2, 2), np.float32), karras_sigmas(4), callback=lambda i, s, x, d: seen.append(i))
    assert seen == [0, 1, 2, 3]


def test_guidance_weights_as_diffusers():
    w = guidance_scales(1.0, 3.0, 5)
    assert w.dtype == np.float32 and np.array_equal(w, torch.linspace(1.0, 3.0, 5).numpy())
    assert w[0] == 1.0 and w[-1] == 3.0
    assert guidance_scales(1.0, 1.0, 5) is None  # max <= 1: no CFG, batch 1
    assert guidance_scales(0.5, 0.9, 5) is None


def test_added_time_ids_condition_on_fps_minus_one():
    ids = added_time_ids(fps=7, motion_bucket_id=127, noise_aug_strength=0.02)
    assert ids.shape == (1, 3) and ids.dtype == np.float32
    assert ids[0].tolist() == pytest.approx([6.0, 127.0, 0.02])
    with pytest.raises(ValueError):
        added_time_ids(7, 127, 0.02, num_time_ids=2)
