"""Progress and cancellation of a pipeline call: one event per unit of work, and a way to stop.

``VideoPipeline.__call__(..., callback=fn)`` calls ``fn(event)`` after each unit of work: per
image in ``preprocess``, once for ``image_encoder`` and ``vae_encoder`` (the whole batch in one
call), after every UNet step (``unet``, the sampler's step: k-diffusion's
``callback({x, i, sigma, denoised})`` and diffusers' ``callback_on_step_end`` are the anchors),
and per decoded chunk in ``vae_decoder``. ``fn`` returning ``True`` stops the call, which raises
:class:`runtime.errors.Cancelled` before the next unit of work starts; any other return value
(``None``, ``False``, a dict) lets it go on.

The callback runs on the thread that called the pipeline, between network calls: a slow callback
slows the clip, and the arrays it receives must not be modified (copy them to keep them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runtime.errors import Cancelled


@dataclass(frozen=True)
class ProgressEvent:
    """One finished unit of work of a pipeline call.

    Attributes:
        stage: the pipeline stage (one of :data:`runtime.pipeline.STAGES`; events come from
            ``preprocess``, ``image_encoder``, ``vae_encoder``, ``unet`` and ``vae_decoder``).
        step: 1-based index of the unit within the stage.
        total: units in the stage (images for ``preprocess``, sampler steps for ``unet``,
            decoder calls of all clips for ``vae_decoder``, 1 for the encoders).
        sigma: ``unet`` only: the noise level the step started from (float).
        latents: ``unet`` only: ``[B, F, C, h, w]`` float32, the latents after the step (B clips).
        denoised: ``unet`` only: the step's denoised estimate ``x0_hat`` ``[B, F, C, h, w]``.
    """

    stage: str
    step: int
    total: int
    sigma: float | None = None
    latents: np.ndarray | None = None
    denoised: np.ndarray | None = None


ProgressCallback = Callable[[ProgressEvent], "bool | None"]


def report(callback: ProgressCallback | None, event: ProgressEvent) -> None:
    """Hand ``event`` to ``callback``; raise :class:`Cancelled` when it returns ``True``."""
    if callback is None:
        return
    answer = callback(event)
    if isinstance(answer, (bool, np.bool_)) and answer:
        raise Cancelled(f"generation cancelled by the progress callback after {event.stage} {event.step}/{event.total}")
