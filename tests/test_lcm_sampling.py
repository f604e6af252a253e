"""The consistency sampler's pieces against the reference scheduler (tests/reference_lcm_scheduler.py),
bit for bit: schedule and UNet time inputs, one step's arithmetic; and its options, manifest key and
noise contract (defaults per sampler, strict reading, per-step draws)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from contract.bundle import Bundle, LCMParams, SamplerConfig
from contract.errors import BundleError
from contract.specs import ModelConfig
from runtime.errors import InputError
from runtime.noise import ExplicitNoise, RecordingNoise, SplitMixNoise, TorchNoise, save_noise
from runtime.options import GenerateOptions
from runtime.sampling import consistency_scalings, lcm_initial_noise_scale, lcm_schedule, sample_lcm
from tests.reference_lcm_scheduler import ReferenceLCMScheduler

LCM = SamplerConfig.builtin("lcm")


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 8, 40])
def test_schedule_and_timesteps_match_the_reference(steps):
    ref = ReferenceLCMScheduler()
    ref.set_timesteps(steps)
    sigmas, timesteps = lcm_schedule(steps)
    assert sigmas.dtype == timesteps.dtype == np.float32 and sigmas.shape == (steps + 1,) and sigmas[-1] == 0
    assert np.array_equal(sigmas, ref.sigmas.numpy())
    # the UNet rounds the scheduler's float64 timestep to float32 in its time embedding
    assert np.array_equal(timesteps, ref.timesteps.float().numpy())
    assert sigmas[0] == np.float32(700.0)
    assert lcm_initial_noise_scale() == np.float32(ref.init_noise_sigma)


def test_schedule_rejects_more_steps_than_levels():
    with pytest.raises(ValueError, match="1 to 40 steps"):
        lcm_schedule(41)


@pytest.mark.parametrize("steps", [1, 4])
def test_sampler_steps_match_the_reference(steps):
    """Every step of sample_lcm, fed the same model outputs and noise, equals the scheduler's step."""
    g = torch.Generator().manual_seed(5)
    shape = (1, 3, 4, 2, 3)
    outputs = [torch.randn(shape, generator=g) for _ in range(steps)]
    noises = [torch.randn(shape, generator=g) for _ in range(steps)]
    x0 = torch.randn(shape, generator=g) * float(lcm_initial_noise_scale())

    ref = ReferenceLCMScheduler()
    ref.set_timesteps(steps)
    ref.step_generator = torch.Generator().manual_seed(9)  # the reference draws from its own generator...
    x, ref_noise = x0.clone(), []
    for i, t in enumerate(ref.timesteps):
        state = ref.step_generator.get_state()
        x = ref.step(outputs[i], t, x).prev_sample
        ref_noise.append(torch.randn(shape, generator=torch.Generator().set_state(state)))

    sigmas, timesteps = lcm_schedule(steps)
    seen = []
    model = lambda x_, s_, t_: (seen.append((s_, t_)), outputs[len(seen) - 1].numpy())[1]
    ours = sample_lcm(model, x0.numpy(), sigmas, timesteps, lambda i, shp: ref_noise[i].numpy())  # ...which ours replays
    assert [s for s, _ in seen] == list(sigmas[:-1]) and [t for _, t in seen] == list(timesteps)
    assert np.array_equal(ours, x.numpy())


def test_consistency_scalings_are_edm_v_prediction():
    c_skip, c_out = consistency_scalings(np.float32(2.0))
    assert c_skip == pytest.approx(1 / 5) and c_out == pytest.approx(-2 / 5**0.5)
    c_skip, c_out = consistency_scalings(np.float32(0.5), sigma_data=0.5)
    assert c_skip == pytest.approx(0.5) and c_out == pytest.approx(-0.25 / 0.5**0.5)


# ---------------------------------------------------------------------------- options and manifest


def test_defaults_follow_the_chosen_sampler():
    config = ModelConfig()
    o = GenerateOptions().resolve(config, LCM)
    assert (o.sampler, o.steps, o.min_guidance, o.max_guidance) == ("lcm", 4, 1.0, 1.2)
    o = GenerateOptions(sampler="euler").resolve(config, LCM)  # another sampler: its own defaults
    assert (o.sampler, o.steps, o.max_guidance) == ("euler", 25, 3.0)
    o = GenerateOptions(sampler="lcm").resolve(config)  # lcm on an Euler bundle: AnimateLCM's defaults
    assert (o.sampler, o.steps, o.max_guidance) == ("lcm", 4, 1.2)
    o = GenerateOptions().resolve(config)  # no sampler key: Euler, model.config's defaults
    assert (o.sampler, o.steps, o.max_guidance) == ("euler", 25, 3.0)
    assert GenerateOptions(steps=2, max_guidance=1.0).resolve(config, LCM).steps == 2


def test_option_errors():
    with pytest.raises(InputError, match=r"steps \(--steps\) 41 is above 40"):
        GenerateOptions(sampler="lcm", steps=41).resolve(ModelConfig())
    with pytest.raises(InputError, match=r"sampler \(--sampler\) must be one of euler, lcm"):
        GenerateOptions(sampler="ddim").resolve(ModelConfig())


def test_cli_has_the_sampler_flag(capsys):
    from runtime.generate import main

    with pytest.raises(SystemExit) as exc:
        main(["--bundle", "b", "--image", "i.png", "--out", "o.mp4", "--sampler", "ddim"])
    assert exc.value.code == 2 and "--sampler" in capsys.readouterr().err


def test_manifest_sampler_round_trip_and_strictness(tiny_bundle, tmp_path):
    assert SamplerConfig.from_json(LCM.to_json()) == LCM
    assert LCM.to_json() == {"name": "lcm", "steps": 4, "min_guidance": 1.0, "max_guidance": 1.2,
                             "params": {"num_train_timesteps": 40, "sigma_min": 0.002, "sigma_max": 700.0, "sigma_data": 1.0,
                                        "s_noise": 1.0, "rho": 7.0, "clip_denoised": False}}
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["sampler"] == {"name": "euler"}
    bundle = tmp_path / "b"
    bundle.mkdir()

    def load(sampler):
        m = dict(manifest)
        if sampler is None:
            m.pop("sampler")
        else:
            m["sampler"] = sampler
        (bundle / "manifest.json").write_text(json.dumps(m))
        return Bundle.load(bundle)

    assert load(None).sampler == SamplerConfig()  # a bundle written before the key: Euler
    params = LCM.to_json()["params"]
    for bad, words in [({"name": "ddim"}, "'name' is one of euler, lcm, got 'ddim'"), ([], "got []"),
                       ({"name": "lcm", "steps": 4, "params": params, "eta": 1}, "unknown keys ['eta']"),
                       ({"name": "lcm", "params": {k: v for k, v in params.items() if k != "rho"}}, "must hold exactly"),
                       ({"name": "lcm", "steps": "4", "params": params}, "'sampler.steps' must be a positive number"),
                       ({"name": "euler", "params": params}, "takes no 'params'")]:
        with pytest.raises(BundleError, match="re-export the bundle") as exc:
            load(bad)
        assert words in str(exc.value)


# ---------------------------------------------------------------------------- noise


def test_step_noise_sources(tmp_path):
    shape = (1, 2, 4, 2, 2)
    mix = SplitMixNoise(3)
    assert not np.array_equal(mix.step(0, shape), mix.latents(shape)) and not np.array_equal(mix.step(0, shape), mix.step(1, shape))
    # torch: the generator's next draws, after augmentation and latents (the scheduler's order)
    t = TorchNoise(3)
    drawn = [t.augmentation((1, 3, 4, 4)), t.latents(shape), t.step(0, shape), t.step(1, shape)]
    g = torch.Generator().manual_seed(3)
    expect = [torch.randn((1, 3, 4, 4), generator=g).numpy()] + [torch.randn(shape, generator=g).numpy() for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(drawn, expect))
    rec = RecordingNoise(mix)
    rec.augmentation((1, 3, 4, 4)), rec.latents(shape), rec.step(0, shape), rec.step(1, shape)
    path = save_noise(tmp_path / "n.npz", rec.drawn["augmentation"], rec.drawn["latents"], rec.drawn["steps"])
    replay = ExplicitNoise.load(path)
    assert np.array_equal(replay.step(1, shape), mix.step(1, shape))
    with pytest.raises(InputError, match=r"needs 'steps' float32 \[3\+, 1, 2, 4, 2, 2\]"):
        replay.step(2, shape)
    save_noise(tmp_path / "old.npz", rec.drawn["augmentation"], rec.drawn["latents"])
    with pytest.raises(InputError, match="got none"):
        ExplicitNoise.load(tmp_path / "old.npz").step(0, shape)


def test_lcm_params_defaults_are_the_authors_app():
    assert LCMParams() == LCMParams(num_train_timesteps=40, sigma_min=0.002, sigma_max=700.0, sigma_data=1.0, s_noise=1.0,
                                    rho=7.0, clip_denoised=False)
