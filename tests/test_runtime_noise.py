"""The noise sources: the portable splitmix generator's documented values, torch's diffusers order,
explicit noise files."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.noise import ExplicitNoise, SplitMixNoise, TorchNoise, noise_source, save_noise, splitmix64


def test_splitmix64_reference_values():
    """splitmix64 from state 0 gives 0xE220A8397B1DCDAF first (Vigna's reference implementation)."""
    assert int(splitmix64(np.uint64(0))) == 0xE220A8397B1DCDAF
    assert int(splitmix64(np.uint64(1234567))) == 6457827717110365317


def test_splitmix_noise_documented_values():
    """Fixed values: any runtime implementing the module docstring's definition must give these."""
    noise = SplitMixNoise(0)
    np.testing.assert_array_equal(
        noise.augmentation((5,)), np.float32([0.46343129873275757, 1.1470288038253784, 1.3444031476974487,
                                              0.2656847834587097, 1.1087217330932617]))
    np.testing.assert_array_equal(noise.latents((3,)), np.float32([-0.49255630373954773, 0.9970126748085022, 0.5239086747169495]))


def test_splitmix_noise_is_standard_normal_and_stateless():
    x = SplitMixNoise(7).latents((2, 100_000))
    assert x.dtype == np.float32 and abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    assert np.array_equal(SplitMixNoise(7).latents((2, 100_000)), x)  # same seed, same draws, any call order
    assert not np.array_equal(SplitMixNoise(8).latents((2, 100_000)), x)
    a = SplitMixNoise(7)
    assert np.array_equal(a.augmentation((10,)), SplitMixNoise(7).augmentation((10,)))
    assert np.abs(np.corrcoef(a.augmentation((1000,)), a.latents((1000,)))[0, 1]) < 0.1  # separate streams


def test_torch_noise_draws_in_diffusers_order():
    torch = pytest.importorskip("torch")
    noise = TorchNoise(3)
    g = torch.Generator().manual_seed(3)
    assert np.array_equal(noise.augmentation((1, 3, 4, 4)), torch.randn((1, 3, 4, 4), generator=g).numpy())
    assert np.array_equal(noise.latents((1, 2, 4, 2, 2)), torch.randn((1, 2, 4, 2, 2), generator=g).numpy())


def test_explicit_noise_roundtrip_and_errors(tmp_path):
    aug, lat = np.ones((1, 3, 4, 4), np.float32), np.zeros((1, 2, 4, 2, 2), np.float32)
    save_noise(tmp_path / "n.npz", aug, lat)
    noise = ExplicitNoise.load(tmp_path / "n.npz")
    assert np.array_equal(noise.augmentation((1, 3, 4, 4)), aug) and np.array_equal(noise.latents((1, 2, 4, 2, 2)), lat)
    with pytest.raises(InputError, match=r"needs float32 \[1, 3, 8, 8\]"):
        noise.augmentation((1, 3, 8, 8))
    with pytest.raises(InputError, match="does not exist"):
        ExplicitNoise.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "partial.npz", latents=lat)
    with pytest.raises(InputError, match="augmentation"):
        ExplicitNoise.load(tmp_path / "partial.npz")
    with pytest.raises(InputError, match="generator"):
        noise_source("mersenne", 0)
