"""TensorRT optimization profiles: min/opt/max shapes per network input, from the network specs.

A profile is given in pixel space, as one ``(min, opt, max)`` range per symbol:

- ``batch``: videos per call. The UNet's batch range is ``(min, opt, 2 * max)`` so that
  classifier-free guidance (which doubles the batch, SVD's negative embedding/latent being
  zeros) always fits; ``cfg=True`` also moves its ``opt`` to ``2 * opt``.
- ``frames``: frames per video (UNet ``sample [B, F, 8, h, w]``);
- ``decode_chunk``: frames per call of the temporal VAE decoder (``latent [F, 4, h, w]``);
- ``height`` / ``width``: pixels; latent sizes follow from the VAE's downsampling.

The CLIP image encoder's input is fixed at 224x224 (``pixel_values [B, 3, 224, 224]``), so
only its batch varies. :meth:`contract.specs.NetworkSpec.profile` turns a network's symbol
ranges into shapes; nothing here restates a shape.

Defaults (:func:`default_ranges`) target SVD's 14 frames at 576x1024 (``opt``) and allow:

- frames 1..max(num_frames, 25) (25 = SVD-XT), decode chunks 1..the frames maximum;
- height and width from half the smaller default side (rounded down to the model's pixel
  multiple) up to the larger default side: 256..1024 for SVD, so 576x1024, 1024x576,
  512x512 and 768x448 (SF-V's training size) all run on one engine;
- batch 1 video (UNet 1..2 for CFG).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

from contract.errors import ShapeError
from contract.specs import ModelConfig, NetworkSpec, check_resolution

Range = tuple[int, int, int]
SVD_XT_FRAMES = 25  # the longest SVD variant (img2vid-xt); the default frames maximum


@dataclass(frozen=True)
class ProfileRanges:
    """Pixel-space (min, opt, max) per symbol, shared by all networks of one bundle."""

    batch: Range = (1, 1, 1)  # videos per call; the UNet gets (min, opt, 2*max) for CFG
    frames: Range = (1, 14, 25)  # frames per video (UNet)
    decode_chunk: Range = (1, 14, 25)  # frames per decoder call
    height: Range = (256, 576, 1024)  # pixels
    width: Range = (256, 1024, 1024)  # pixels
    cfg: bool = False  # optimise the UNet for the doubled CFG batch (multi-step SVD)

    @property
    def guided_batch(self) -> Range:
        """The UNet's batch: up to twice the videos (CFG doubles it); opt doubled when ``cfg``."""
        lo, opt, hi = self.batch
        return (lo, 2 * opt if self.cfg else opt, 2 * hi)

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def parse_range(text: str, name: str) -> Range:
    """Parse ``"MIN:OPT:MAX"`` (or one number ``"N"`` for a fixed size) into a checked range."""
    parts = str(text).strip().split(":")
    if len(parts) not in (1, 3):
        raise ShapeError(f"--{name.replace('_', '-')} {text!r}: expected MIN:OPT:MAX (e.g. 1:14:25) or one number N")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ShapeError(
            f"--{name.replace('_', '-')} {text!r}: MIN, OPT and MAX must be integers (e.g. 1:14:25)"
        ) from None
    rng = values * 3 if len(values) == 1 else values
    check_range(rng, name)
    return rng


def check_range(rng: Range, name: str) -> None:
    lo, opt, hi = rng
    flag = f"--{name.replace('_', '-')}"
    if lo < 1:
        raise ShapeError(f"{flag} {lo}:{opt}:{hi}: sizes must be at least 1")
    if not lo <= opt <= hi:
        raise ShapeError(f"{flag} {lo}:{opt}:{hi}: need MIN <= OPT <= MAX; e.g. {min(rng)}:{sorted(rng)[1]}:{max(rng)}")


def _round_down(value: int, multiple: int) -> int:
    return max(multiple, value // multiple * multiple)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def default_ranges(config: ModelConfig) -> ProfileRanges:
    """The documented default ranges for a model (see the module docstring)."""
    m = config.pixel_multiple
    h, w, f = config.default_height, config.default_width, config.num_frames
    lo = _round_down(min(h, w) // 2, m)
    hi = _round_up(max(h, w), m)
    f_max = max(f, SVD_XT_FRAMES)
    return ProfileRanges(
        batch=(1, 1, 1),
        frames=(1, f, f_max),
        decode_chunk=(1, f, f_max),
        height=(lo, h, hi),
        width=(lo, w, hi),
    )


def resolve_ranges(config: ModelConfig, overrides: Mapping[str, Range | bool | None]) -> ProfileRanges:
    """Defaults for ``config`` with the user's ranges applied, then checked against the model.

    ``decode_chunk`` follows ``frames`` unless given: ``(1, min(frames opt, ...), frames max)``.
    Raises :class:`ShapeError` when a size is not a multiple of ``config.pixel_multiple``.
    """
    ranges = default_ranges(config)
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - set(ProfileRanges.__dataclass_fields__)
    if unknown:
        raise ShapeError(f"unknown profile symbols {sorted(unknown)}; known: {list(ProfileRanges.__dataclass_fields__)}")
    if "frames" in given and "decode_chunk" not in given:
        f_lo, f_opt, f_hi = given["frames"]
        given["decode_chunk"] = (1, f_opt, f_hi)
    ranges = replace(ranges, **{k: (tuple(v) if isinstance(v, (tuple, list)) else v) for k, v in given.items()})
    check_ranges(ranges, config)
    return ranges


def check_ranges(ranges: ProfileRanges, config: ModelConfig) -> None:
    for name in ("batch", "frames", "decode_chunk", "height", "width"):
        check_range(getattr(ranges, name), name)
    for k, label in enumerate(("MIN", "OPT", "MAX")):
        try:
            check_resolution(config, ranges.height[k], ranges.width[k])
        except ShapeError as exc:
            raise ShapeError(f"profile {label} (--height/--width): {exc}") from None


def network_ranges(spec: NetworkSpec, ranges: ProfileRanges) -> dict[str, Range]:
    """The symbol ranges that ``spec`` is resolved with: its own profile policy (``profile_symbols``)."""
    return {symbol: getattr(ranges, source) for symbol, source in spec.profile_symbols}


def network_profile(spec: NetworkSpec, config: ModelConfig, ranges: ProfileRanges) -> dict[str, dict[str, list[int]]]:
    """``{input name: {"min": shape, "opt": shape, "max": shape}}`` for one network (plain JSON)."""
    shapes = spec.profile(config, network_ranges(spec, ranges))
    return {name: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])} for name, s in shapes.items()}


def polygraphy_profile(profile: Mapping[str, Mapping[str, list[int]]]):
    """The same shapes as a ``polygraphy.backend.trt.Profile`` (builds without TensorRT)."""
    # optional: polygraphy (the export extra)
    from polygraphy.backend.trt import Profile

    result = Profile()
    for name, s in profile.items():
        result.add(name, min=tuple(s["min"]), opt=tuple(s["opt"]), max=tuple(s["max"]))
    return result


def shape_in_profile(shape: tuple[int, ...], bounds: Mapping[str, list[int]]) -> bool:
    lo, hi = bounds["min"], bounds["max"]
    return len(shape) == len(lo) and all(a <= s <= b for s, a, b in zip(shape, lo, hi))
