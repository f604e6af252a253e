"""Where a clip's random numbers come from: torch's generator, a documented portable one, or a file.

A clip draws two arrays of standard normal noise, in this order (as diffusers does):

1. ``augmentation`` ``[1, 3, H, W]``: added to the conditioning image (times ``noise_aug_strength``);
2. ``latents`` ``[1, F, C, h, w]``: the initial latents, before scaling by ``sqrt(sigma_0^2 + 1)``;
3. ``step(i)`` ``[1, F, C, h, w]``, ``i = 0 .. steps-2``: only the consistency sampler (``lcm``), the
   fresh noise after step ``i`` (:func:`runtime.sampling.sample_lcm`).

Sources:

- :class:`TorchNoise` — ``torch.randn`` from ``torch.Generator().manual_seed(seed)``: with the
  same seed the same draws as diffusers' ``StableVideoDiffusionPipeline``. Needs torch.
- :class:`SplitMixNoise` — the portable generator that the C++ runtime implements too, defined
  here so that any language can reproduce it: ``splitmix64`` (Steele et al. 2014) over a counter,
  then Box-Muller in float64, rounded to float32. For seed ``s``, ``base = splitmix64(s)`` and
  ``raw(j) = splitmix64(base + j)`` (uint64 arithmetic). Array ``k`` (0 augmentation, 1 latents)
  (``2 + i`` for step ``i``'s noise) takes element ``i`` (C order) from ``a = raw((k << 40) + 2i)`` and ``b = raw((k << 40) + 2i + 1)``:
  ``u1 = ((a >> 11) + 1) / 2^53``, ``u2 = (b >> 11) / 2^53``,
  ``z = sqrt(-2 ln u1) cos(2 pi u2)``. Runtimes agree to one float32 ulp (libm's float64 log and
  cos are not always correctly rounded).
- :class:`ExplicitNoise` — the arrays from an ``.npz`` (``augmentation``, ``latents``, and ``steps``
  ``[steps-1, 1, F, C, h, w]`` for the lcm sampler), so that
  two runtimes can be compared on exactly the same inputs; :func:`save_noise` writes one.

``noise_source("auto", seed)`` picks torch when it is installed (diffusers' frames), else splitmix.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from contract.atomic import atomic_path
from runtime.errors import InputError

GENERATORS = ("auto", "torch", "splitmix")
_STREAM_SHIFT = 40  # each array's counter range: 2^40 draws, far beyond any clip


class NoiseSource(Protocol):
    def augmentation(self, shape: Sequence[int]) -> np.ndarray: ...

    def latents(self, shape: Sequence[int]) -> np.ndarray: ...

    def step(self, index: int, shape: Sequence[int]) -> np.ndarray: ...


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 output function on uint64 values (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class SplitMixNoise:
    """The documented portable generator (module docstring); stateless per array."""

    def __init__(self, seed: int):
        self.base = splitmix64(np.uint64(seed % 2**64))

    def normal(self, shape: Sequence[int], stream: int) -> np.ndarray:
        n = int(np.prod(shape))
        counters = (np.uint64(stream) << np.uint64(_STREAM_SHIFT)) + 2 * np.arange(n, dtype=np.uint64)
        with np.errstate(over="ignore"):
            a = splitmix64(self.base + counters)
            b = splitmix64(self.base + counters + np.uint64(1))
        u1 = ((a >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53
        u2 = (b >> np.uint64(11)).astype(np.float64) * 2.0**-53
        z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
        return z.astype(np.float32).reshape(tuple(shape))

    def augmentation(self, shape):
        return self.normal(shape, 0)

    def latents(self, shape):
        return self.normal(shape, 1)

    def step(self, index, shape):
        return self.normal(shape, 2 + index)


class TorchNoise:
    """``torch.randn`` from one seeded CPU generator, drawn in diffusers' order."""

    def __init__(self, seed: int):
        # optional: torch (the export extra)
        import torch

        self._torch = torch
        self.generator = torch.Generator().manual_seed(seed)

    def augmentation(self, shape):
        return self._torch.randn(tuple(shape), generator=self.generator, dtype=self._torch.float32).numpy()

    def latents(self, shape):
        return self._torch.randn(tuple(shape), generator=self.generator, dtype=self._torch.float32).numpy()

    def step(self, index, shape):
        # The next draw of the same generator: call in step order (as the scheduler draws them).
        return self._torch.randn(tuple(shape), generator=self.generator, dtype=self._torch.float32).numpy()


class ExplicitNoise:
    """The arrays given (``ExplicitNoise.load("noise.npz")``); shapes are checked when drawn."""

    def __init__(self, augmentation: np.ndarray, latents: np.ndarray, source: str = "explicit noise",
                 steps: np.ndarray | None = None):
        self._arrays = {"augmentation": augmentation, "latents": latents}
        self.steps = steps  # [n, 1, F, C, h, w]: the lcm sampler's draws, or None
        self.source = source

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExplicitNoise":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"noise file {path} does not exist; write one with runtime.noise.save_noise or --save-noise")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in ("augmentation", "latents")}
                steps = np.asarray(data["steps"]) if "steps" in data.files else None
        except KeyError as exc:
            raise InputError(f"{path} lacks the array {exc.args[0]!r}; a noise file holds 'augmentation' and 'latents'") from None
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path} is not a readable .npz of arrays ({exc})") from None
        return cls(arrays["augmentation"], arrays["latents"], source=str(path), steps=steps)

    def _take(self, name: str, shape) -> np.ndarray:
        a = self._arrays[name]
        if tuple(a.shape) != tuple(shape) or a.dtype != np.float32:
            raise InputError(
                f"{self.source}: '{name}' is {a.dtype} {list(a.shape)}, this clip needs float32 {list(shape)}; "
                "write the noise for the same frames, height and width"
            )
        return a

    def augmentation(self, shape):
        return self._take("augmentation", shape)

    def latents(self, shape):
        return self._take("latents", shape)

    def step(self, index, shape):
        s = self.steps
        if s is None or s.dtype != np.float32 or s.ndim != len(shape) + 1 or tuple(s.shape[1:]) != tuple(shape) or index >= len(s):
            got = "none" if s is None else f"{s.dtype} {list(s.shape)}"
            raise InputError(
                f"{self.source}: the lcm sampler needs 'steps' float32 [{index + 1}+, {', '.join(map(str, shape))}] "
                f"(one noise array per step but the last), got {got}; write the noise with --save-noise from a run "
                "with the same sampler, steps, frames, height and width"
            )
        return s[index]


class RecordingNoise:
    """Wraps a source and keeps what it drew, for :func:`save_noise`."""

    def __init__(self, inner: NoiseSource):
        self.inner = inner
        self.drawn: dict[str, np.ndarray] = {}

    def augmentation(self, shape):
        self.drawn["augmentation"] = self.inner.augmentation(shape)
        return self.drawn["augmentation"]

    def latents(self, shape):
        self.drawn["latents"] = self.inner.latents(shape)
        return self.drawn["latents"]

    def step(self, index, shape):
        z = self.inner.step(index, shape)
        self.drawn.setdefault("steps", []).append(z)
        return z


def noise_source(generator: str, seed: int) -> NoiseSource:
    """``auto`` (torch when installed, else splitmix), ``torch`` or ``splitmix``, seeded."""
    if generator not in GENERATORS:
        raise InputError(f"unknown noise generator {generator!r}; choose one of {', '.join(GENERATORS)}")
    if generator == "auto":
        generator = "torch" if importlib.util.find_spec("torch") is not None else "splitmix"
    if generator == "torch":
        if importlib.util.find_spec("torch") is None:
            raise InputError("--generator torch needs PyTorch (pip install torch); use --generator splitmix")
        return TorchNoise(seed)
    return SplitMixNoise(seed)


def save_noise(path: str | os.PathLike, augmentation: np.ndarray, latents: np.ndarray, steps=None) -> Path:
    """Write an uncompressed ``.npz`` with the arrays (atomically), readable by every runtime.

    ``steps``: the lcm sampler's draws (a list of ``[1, F, C, h, w]`` or one ``[n, 1, F, C, h, w]``), if any.
    """
    arrays = {"augmentation": np.asarray(augmentation, np.float32), "latents": np.asarray(latents, np.float32)}
    if steps is not None and len(steps):
        arrays["steps"] = np.asarray(np.stack(list(steps)), np.float32)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path
