"""Noise levels: the Karras/EDM schedule and the two training samplers of SF-V.

- Generator (paper Eq. 5): sigma drawn uniformly from the first ``Tg - 1`` levels of a
  ``Tg``-level Karras schedule (``Tg = 4``); inference starts from sigma_max.
- Discriminator: a discretised log-normal: ``T_d`` Karras levels, level ``i`` drawn with the
  probability mass that ``log sigma ~ N(P_mean, P_std^2)`` puts on its bin in log space
  (bins split halfway between neighbouring levels; the tails go to the end levels).
"""

from __future__ import annotations

import math

import torch

from runtime.sampling import karras_sigmas as runtime_karras_sigmas


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 700.0, rho: float = 7.0) -> torch.Tensor:
    """``n`` decreasing levels from sigma_max to sigma_min (Karras et al. 2022, Eq. 5), ``[n]``.

    The runtime's schedule without its final 0 (the same float32 values; returned as float64 for
    the log-space bins below), so the generator trains at the levels the deployed sampler visits.
    """
    if n < 1:
        raise ValueError("need at least one level")
    return torch.as_tensor(runtime_karras_sigmas(n, sigma_min, sigma_max, rho))[:-1].double()


class GeneratorSigmas:
    """Uniform over the first ``levels - 1`` of ``levels`` Karras levels (SF-V Eq. 5)."""

    def __init__(self, levels: int = 4, sigma_min: float = 0.002, sigma_max: float = 700.0, rho: float = 7.0):
        self.levels = karras_sigmas(levels, sigma_min, sigma_max, rho)[: max(levels - 1, 1)].float()

    def __call__(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[n]`` noise levels."""
        idx = torch.randint(len(self.levels), (n,), generator=generator)
        return self.levels[idx]


class DiscriminatorSigmas:
    """Discretised log-normal over ``levels`` Karras levels (``T_d = 1000``, ``P_mean = -1``, ``P_std = 1``)."""

    def __init__(
        self,
        p_mean: float = -1.0,
        p_std: float = 1.0,
        levels: int = 1000,
        sigma_min: float = 0.002,
        sigma_max: float = 700.0,
        rho: float = 7.0,
    ):
        self.levels = karras_sigmas(levels, sigma_min, sigma_max, rho).flip(0)  # increasing
        logs = self.levels.log()
        edges = torch.cat([torch.tensor([-math.inf]), (logs[1:] + logs[:-1]) / 2, torch.tensor([math.inf])])
        cdf = torch.special.ndtr((edges.double() - p_mean) / p_std)
        self.probs = (cdf[1:] - cdf[:-1]).clamp_min(0)
        self.levels = self.levels.float()

    def __call__(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[n]`` noise levels."""
        idx = torch.multinomial(self.probs, n, replacement=True, generator=generator)
        return self.levels[idx]
