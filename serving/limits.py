"""Checks of one upload before it is queued: each failure is an HTTP status and a one-line message.

Options go through the same :meth:`GenerateOptions.resolve` checks as ``runtime.generate``'s
flags, so the service and the CLI say the same thing about the same bad value.
"""

from __future__ import annotations

import dataclasses
import io
import json

import PIL.Image

from contract.specs import ModelConfig
from contract.errors import ToolkitError
from runtime.options import GenerateOptions
from runtime.sampling import SamplerConfig
from serving.jobs import FORMATS

OPTION_NAMES = tuple(f.name for f in dataclasses.fields(GenerateOptions))


class Rejected(Exception):
    """A request the service turns down: ``status`` (HTTP) and a one-line ``message``."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def check_image(data: bytes, max_bytes: int, max_pixels: int) -> None:
    """413 above the size or pixel cap, 422 when ``data`` is not an image Pillow reads."""
    if len(data) > max_bytes:
        raise Rejected(413, f"the image is {len(data)} bytes, above this service's cap of {max_bytes}; send a smaller file")
    try:
        with PIL.Image.open(io.BytesIO(data)) as im:  # reads the header only
            width, height = im.size
            if width * height > max_pixels:
                raise Rejected(413, f"the image is {width}x{height} = {width * height} pixels, above this service's cap "
                                    f"of {max_pixels}; downscale it (the model works at its own size anyway)")
            im.verify()
    except Rejected:
        raise
    except Exception as exc:  # Pillow raises many kinds for a file it cannot read
        raise Rejected(422, f"the 'image' field is not an image Pillow can read ({type(exc).__name__}); send a PNG, JPEG or WebP") from None


def parse_options(text: str | None, config: ModelConfig, sampler: SamplerConfig,
                  defaults: dict | None = None) -> tuple[dict, GenerateOptions]:
    """The ``options`` form field (a JSON object of GenerateOptions fields) over the service's
    ``defaults`` -> (the merged fields, the resolved options)."""
    if text is None or not text.strip():
        given = {}
    else:
        try:
            given = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Rejected(422, f"options is not valid JSON ({exc.msg} at character {exc.pos}); send an object such as "
                                '{"steps": 1, "max_guidance": 1.0, "seed": 3}') from None
        if not isinstance(given, dict):
            raise Rejected(422, f"options must be a JSON object of generation options, got {type(given).__name__}")
    unknown = sorted(set(given) - set(OPTION_NAMES))
    if unknown:
        raise Rejected(422, f"unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTION_NAMES)}")
    given = {**(defaults or {}), **given}
    try:
        resolved = GenerateOptions(**given).resolve(config, sampler)
    except ToolkitError as exc:  # InputError, ShapeError: what runtime.generate prints for the same value
        raise Rejected(422, str(exc)) from None
    except (TypeError, ValueError) as exc:  # e.g. a list where a number goes
        raise Rejected(422, f"invalid options: {exc}") from None
    return given, resolved


def check_format(fmt: str | None) -> str:
    fmt = fmt or "mp4"
    if fmt not in FORMATS:
        raise Rejected(422, f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def batch_key(options: GenerateOptions) -> GenerateOptions:
    """Clips whose options differ only in the seed share one batched pipeline call (one shape)."""
    return dataclasses.replace(options, seed=0)
