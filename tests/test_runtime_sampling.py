"""The sampler's schedule, scalings, Euler step and guidance weights against diffusers' own values
for SVD's scheduler config (EulerDiscreteScheduler: v-prediction, continuous timesteps,
'leading' spacing, Karras sigmas)."""

from __future__ import annotations

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from export.models import SVD_SCHEDULER_CONFIG
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
    assert sigmas.dtype == torch.float32 and sigmas.shape == (steps + 1,)
    assert torch.equal(sigmas, scheduler.sigmas)
    assert torch.equal(c_noise(sigmas[:-1]), scheduler.timesteps)
    assert torch.equal(initial_noise_scale(sigmas), torch.as_tensor(scheduler.init_noise_sigma))
    assert sigmas[0].item() == pytest.approx(700.0) and sigmas[-1].item() == 0.0
    if steps > 1:
        assert sigmas[-2].item() == pytest.approx(0.002)


def test_one_step_schedule_is_sigma_max_then_zero():
    assert karras_sigmas(1).tolist() == [700.0, 0.0]


@pytest.mark.parametrize("steps", [1, 3])
def test_scalings_and_euler_step_equal_diffusers(steps):
    """c_in, the v-prediction denoised estimate and the Euler step, bit for bit, at every sigma."""
    scheduler = _scheduler(steps)
    sigmas = karras_sigmas(steps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 4, 2, 2, generator=g) * initial_noise_scale(sigmas)
    for i, t in enumerate(scheduler.timesteps):
        F = torch.randn(x.shape, generator=g)
        assert torch.equal(scale_input(x, sigmas[i]), scheduler.scale_model_input(x, t))
        step = scheduler.step(F, t, x)
        assert torch.equal(denoised_from_output(F, x, sigmas[i]), step.pred_original_sample)
        ours = sample_euler(lambda x_, s_: denoised_from_output(F, x_, s_), x, sigmas[i : i + 2])
        assert torch.equal(ours, step.prev_sample)
        x = step.prev_sample


def test_edm_scalings_values():
    """c_skip, c_out, c_in at sigma = 1 from the closed forms (SF-V paper Eq. 6, v-prediction form)."""
    sigma = torch.tensor(1.0)
    x, F = torch.tensor(2.0), torch.tensor(3.0)
    assert scale_input(x, sigma).item() == pytest.approx(2.0 / 2**0.5)
    assert denoised_from_output(F, x, sigma).item() == pytest.approx(0.5 * 2.0 - 3.0 / 2**0.5)
    assert c_noise(torch.tensor(700.0)).item() == pytest.approx(0.25 * torch.tensor(700.0).log().item())


def test_one_step_euler_returns_the_denoised_estimate():
    sigmas = karras_sigmas(1)
    x = torch.full((1, 2, 4, 2, 2), 700.0)
    target = torch.linspace(-1, 1, x.numel()).view(x.shape)
    out = sample_euler(lambda x_, s_: target, x, sigmas)
    torch.testing.assert_close(out, target, atol=1e-4, rtol=0)  # x - (x - D) at |x| = 700 in float32


def test_sampler_calls_back_once_per_step():
    seen = []
    sample_euler(lambda x_, s_: x_ * 0, torch.ones(1, 2, 4, 2, 2), karras_sigmas(4), callback=lambda i, s, x: seen.append(i))
    assert seen == [0, 1, 2, 3]


def test_guidance_weights_as_diffusers():
    w = guidance_scales(1.0, 3.0, 5)
    assert torch.equal(w, torch.linspace(1.0, 3.0, 5))
    assert w[0].item() == 1.0 and w[-1].item() == 3.0
    assert guidance_scales(1.0, 1.0, 5) is None  # max <= 1: no CFG, batch 1
    assert guidance_scales(0.5, 0.9, 5) is None


def test_added_time_ids_condition_on_fps_minus_one():
    ids = added_time_ids(fps=7, motion_bucket_id=127, noise_aug_strength=0.02)
    assert ids.shape == (1, 3) and ids.dtype == torch.float32
    assert ids[0].tolist() == pytest.approx([6.0, 127.0, 0.02])
    with pytest.raises(ValueError):
        added_time_ids(7, 127, 0.02, num_time_ids=2)
