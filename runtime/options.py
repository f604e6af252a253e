"""The options of one generation call: one frozen dataclass used by the API, the CLI and the benchmarks.

Fields left ``None`` take the model's default from the bundle manifest (``model.config``:
frames, size, steps, guidance, fps, motion bucket, noise augmentation), so the defaults live in
one place, :class:`contract.specs.ModelConfig`. Each field's metadata names its command-line flag
and help, from which ``python -m runtime.generate`` builds its parser.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from contract.specs import ModelConfig, check_resolution
from runtime.errors import InputError
from runtime.noise import GENERATORS
from runtime.sampling import SAMPLERS, SamplerConfig

DECODERS = ("full", "fast")


def _opt(flag: str, help: str, default=None, **extra):
    return field(default=default, metadata={"flag": flag, "help": help, **extra})


@dataclass(frozen=True)
class GenerateOptions:
    """What to generate. ``steps=1, max_guidance=1`` is SF-V's one step (no guidance, batch 1)."""

    num_frames: int | None = _opt("--frames", "frames to generate (default: the model's, 14 for SVD)")
    height: int | None = _opt("--height", "output height in pixels (default: the model's, 576 for SVD)")
    width: int | None = _opt("--width", "output width in pixels (default: the model's, 1024 for SVD)")
    sampler: str | None = _opt("--sampler", "sampler: euler (SVD's Euler steps) or lcm (consistency sampling, for "
                               "AnimateLCM-SVD-xt; default 4 steps, guidance 1.0 -> 1.2) (default: the bundle's)", choices=SAMPLERS)
    steps: int | None = _opt("--steps", "sampler steps (default: the sampler's, Euler 25, lcm 4; 1 with --max-guidance 1 "
                             "is SF-V's one step)")
    min_guidance: float | None = _opt("--min-guidance", "guidance weight of the first frame (default 1.0)")
    max_guidance: float | None = _opt("--max-guidance", "guidance weight of the last frame (default: Euler 3.0, lcm 1.2; "
                                      "<= 1 turns guidance off)")
    fps: int | None = _opt("--fps", "frame rate of the clip and the fps conditioning (default 7)")
    motion_bucket_id: int | None = _opt("--motion-bucket-id", "motion conditioning (default 127; higher moves more)")
    noise_aug_strength: float | None = _opt("--noise-aug", "noise added to the conditioning image (default 0.02)")
    decode_chunk_size: int | None = _opt("--decode-chunk", "frames per VAE decoder call (default: all frames)")
    seed: int = _opt("--seed", "seed of the noise generator (default 0)", default=0)
    generator: str = _opt("--generator", "noise generator: auto (torch when installed, as diffusers; else splitmix), "
                          "torch or splitmix (portable, also in the C++ runtime) (default auto)", default="auto",
                          choices=GENERATORS)
    decoder: str = _opt("--decoder", "VAE decoder: full (the model's temporal decoder) or fast (the bundle's distilled "
                        "vae_decoder_fast, from export.onnx --fast-decoder) (default full)", default="full", choices=DECODERS)

    def resolve(self, config: ModelConfig, sampler: SamplerConfig | None = None) -> "GenerateOptions":
        """A copy with every ``None`` replaced by the model's default, checked (:class:`InputError`).

        ``sampler``: the bundle's (manifest ``sampler``; ``None`` = Euler); steps and guidance
        default to the chosen sampler's (:func:`chosen_sampler`), else to ``config``'s.
        """
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise InputError(f"{_label('sampler')} must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        chosen = chosen_sampler(self.sampler, sampler)
        defaults = {
            "sampler": chosen.name,
            "num_frames": config.num_frames,
            "height": config.default_height,
            "width": config.default_width,
            "steps": config.steps if chosen.steps is None else chosen.steps,
            "min_guidance": config.min_guidance if chosen.min_guidance is None else chosen.min_guidance,
            "max_guidance": config.max_guidance if chosen.max_guidance is None else chosen.max_guidance,
            "fps": config.fps,
            "motion_bucket_id": config.motion_bucket_id,
            "noise_aug_strength": config.noise_aug_strength,
        }
        filled = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        opts = dataclasses.replace(self, **filled)
        if opts.decode_chunk_size is None:
            opts = dataclasses.replace(opts, decode_chunk_size=opts.num_frames)
        opts.check(config)
        if chosen.params is not None and opts.steps > chosen.params.num_train_timesteps:
            raise InputError(
                f"{_label('steps')} {opts.steps} is above {chosen.params.num_train_timesteps}: the lcm sampler visits levels of "
                f"the {chosen.params.num_train_timesteps} its UNet was distilled on (2 to 8 steps are typical)"
            )
        return opts

    def check(self, config: ModelConfig) -> None:
        for name in ("num_frames", "steps", "decode_chunk_size", "fps"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise InputError(f"{_label(name)} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise InputError(f"{_label('seed')} must be a non-negative integer, got {self.seed!r}")
        check_resolution(config, self.height, self.width)
        if self.min_guidance > self.max_guidance:
            raise InputError(
                f"{_label('min_guidance')} {self.min_guidance} is above {_label('max_guidance')} {self.max_guidance}: "
                "the guidance weight rises linearly from the first frame (min) to the last (max); swap them"
            )
        if not 0 <= self.noise_aug_strength:
            raise InputError(f"{_label('noise_aug_strength')} must be >= 0, got {self.noise_aug_strength}")
        for name in ("generator", "decoder", "sampler"):
            choices = _FIELDS[name].metadata["choices"]
            if getattr(self, name) not in choices:
                raise InputError(f"{_label(name)} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")

    @property
    def guided(self) -> bool:
        """Classifier-free guidance runs (batch doubled) when ``max_guidance > 1``, as in diffusers."""
        return self.max_guidance > 1.0


_FIELDS = {f.name: f for f in dataclasses.fields(GenerateOptions)}


def _label(name: str) -> str:
    """``steps (--steps)``: the API name and the flag, so an error reads right from either."""
    return f"{name} ({_FIELDS[name].metadata['flag']})"


def add_arguments(parser) -> None:
    """Add one flag per option to an ``argparse`` parser (dest = the field name, default None = the model's)."""
    types = {"num_frames": int, "height": int, "width": int, "steps": int, "fps": int, "motion_bucket_id": int,
             "decode_chunk_size": int, "seed": int, "min_guidance": float, "max_guidance": float,
             "noise_aug_strength": float, "generator": str, "decoder": str, "sampler": str}
    for f in dataclasses.fields(GenerateOptions):
        extra = {"choices": f.metadata["choices"]} if "choices" in f.metadata else {}
        parser.add_argument(f.metadata["flag"], dest=f.name, type=types[f.name], default=f.default,
                            help=f.metadata["help"], **extra)


def chosen_sampler(name: str | None, bundle: SamplerConfig | None = None) -> SamplerConfig:
    """The sampler a call runs: ``name`` (``None``: the bundle's) with the bundle's defaults and
    constants when it is the bundle's own, else the sampler's built-in ones."""
    bundle = bundle or SamplerConfig()
    if name is None or name == bundle.name:
        return bundle
    return SamplerConfig.builtin(name)


def from_arguments(args) -> GenerateOptions:
    """The options an ``argparse`` namespace (built with :func:`add_arguments`) holds."""
    return GenerateOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(GenerateOptions)})
