"""A reference of AnimateLCM-SVD-xt's sampler, as a diffusers scheduler that drives diffusers' own
``StableVideoDiffusionPipeline`` in the parity tests (tests/test_lcm_parity.py).

Written from the equations of ``AnimateLCMSVDStochasticIterativeScheduler`` (G-U-N/AnimateLCM,
``animatelcm_svd/animatelcm_scheduler.py``, itself derived from diffusers'
``CMStochasticIterativeScheduler``), not copied from it:

- schedule: of ``N = num_train_timesteps`` Karras levels ``sigma(r)``, ``r = j / (N - 1)``, the
  ``n`` steps visit ``j = k * (N // n)``, ``k = 0..n-1`` (descending sigma), then 0; the sigmas are
  kept as float32, the timesteps ``0.25 ln(sigma + 1e-44)`` as float64 (the pipeline hands those to
  the UNet, which rounds them to float32 in its time embedding);
- ``scale_model_input``: ``x / sqrt(sigma^2 + sigma_data^2)``;
- ``step``: ``x0 = c_out F + c_skip x`` with ``c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)``,
  ``c_out = -sigma sigma_data / sqrt(sigma^2 + sigma_data^2)`` (optionally clamped to [-1, 1]),
  then ``x_next = x0 + s_noise z sigma_next`` with ``sigma_next`` clamped to ``[0, sigma_max]``
  (diffusers' consistency scheduler uses ``sqrt(sigma_next^2 - sigma_min^2)`` instead);
  ``z ~ N(0, I)`` of the model output's shape, drawn at every step when ``n > 1`` (zeros for one
  step);
- ``init_noise_sigma = sqrt(sigma_max^2 + 1)``.

Where it may differ from the authors' file:

- the noise of ``step``: the authors' pipeline calls ``step`` without a generator, so their draws
  come from torch's global RNG; here they come from :attr:`step_generator` when it is set (the
  tests set the pipeline's own seeded generator, which is what the runtime's torch noise source
  reproduces: augmentation, initial latents, then one draw per step);
- it skips the authors' debugging prints and their custom ``timesteps=`` argument (the
  pipeline never passes it), and it draws the last step's noise although ``sigma_next = 0``
  multiplies it away (as the authors' does: only the generator's state after the clip differs
  from the runtime, which skips that draw).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor


@dataclass
class ReferenceLCMOutput(BaseOutput):
    prev_sample: torch.Tensor  # [B, F, C, h, w]


class ReferenceLCMScheduler(SchedulerMixin, ConfigMixin):
    """Multistep consistency sampling as AnimateLCM-SVD-xt runs it (module docstring)."""

    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 40, sigma_min: float = 0.002, sigma_max: float = 700.0,
                 sigma_data: float = 1.0, s_noise: float = 1.0, rho: float = 7.0, clip_denoised: bool = False):
        self.init_noise_sigma = (sigma_max**2 + 1) ** 0.5
        self.step_generator: torch.Generator | None = None  # where step() draws its noise (see module docstring)
        self.set_timesteps(num_train_timesteps)

    def _karras(self, ramp: np.ndarray) -> np.ndarray:
        c = self.config
        hi, lo = c.sigma_max ** (1 / c.rho), c.sigma_min ** (1 / c.rho)
        return (hi + ramp * (lo - hi)) ** c.rho

    def set_timesteps(self, num_inference_steps: int, device=None, **unused):
        n_train = self.config.num_train_timesteps
        if not 1 <= num_inference_steps <= n_train:
            raise ValueError(f"num_inference_steps must be 1..{n_train}, got {num_inference_steps}")
        self.num_inference_steps = num_inference_steps
        levels = (np.arange(num_inference_steps) * (n_train // num_inference_steps)).round()[::-1].astype(np.int64)
        sigmas = self._karras(levels[::-1] / (n_train - 1))  # float64, descending
        self.timesteps = torch.from_numpy(0.25 * np.log(sigmas + 1e-44)).to(device)  # float64
        self.sigmas = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
        self._index = None

    def _current(self, timestep) -> int:
        if self._index is None:
            self._index = int((self.timesteps == timestep).nonzero()[0].item())
        return self._index

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        sigma = self.sigmas[self._current(timestep)]
        return sample / ((sigma**2 + self.config.sigma_data**2) ** 0.5)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, generator=None, return_dict: bool = True):
        c = self.config
        i = self._current(timestep)
        sigma = self.sigmas[i]
        sigma_next = self.sigmas[i + 1] if i + 1 < c.num_train_timesteps else self.sigmas[-1]
        c_skip = c.sigma_data**2 / (sigma**2 + c.sigma_data**2)
        c_out = -sigma * c.sigma_data / (sigma**2 + c.sigma_data**2) ** 0.5
        denoised = c_out * model_output + c_skip * sample
        if c.clip_denoised:
            denoised = denoised.clamp(-1, 1)
        if len(self.timesteps) > 1:
            gen = generator if generator is not None else self.step_generator
            noise = randn_tensor(model_output.shape, generator=gen, device=model_output.device, dtype=model_output.dtype)
        else:
            noise = torch.zeros_like(model_output)
        prev = denoised + (noise * c.s_noise) * sigma_next.clamp(min=0, max=c.sigma_max)
        self._index += 1
        return ReferenceLCMOutput(prev_sample=prev) if return_dict else (prev,)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
