"""SF-V's losses as small callable objects (paper Sec. 3.3).

Discriminator logits are per pixel: one tensor per head, any shape with the batch first. Each
loss returns a scalar; the training loop logs every term separately.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _mean_over_heads(terms: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.float().mean() for t in terms]).mean()


class HingeDiscriminatorLoss:
    """``E[relu(1 - D(real))] + E[relu(1 + D(fake))]`` per pixel, averaged over heads (Lim & Ye 2017)."""

    def __call__(self, real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        real = _mean_over_heads([torch.relu(1 - r) for r in real_logits])
        fake = _mean_over_heads([torch.relu(1 + f) for f in fake_logits])
        return {"d_real": real, "d_fake": fake, "d_hinge": real + fake}


class R1Penalty:
    """``gamma / 2 * E_batch[ ||grad_x D(x)||^2 ]`` on real inputs (Mescheder et al. 2018, Eq. 9).

    ``D(x)`` per sample is what the hinge loss averages: the mean over pixels of each head's
    logits, averaged over heads (summing pixels instead would scale the penalty with the
    resolution and overwhelm the hinge). ``inputs`` must have been used (with ``requires_grad``)
    to compute ``logits``.
    """

    def __init__(self, gamma: float = 1.0):
        self.gamma = gamma

    def __call__(self, logits: Sequence[torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        per_sample = torch.stack([l.float().flatten(1).mean(1) if l.ndim > 1 else l.float() for l in logits]).mean(0)  # [B]
        (grad,) = torch.autograd.grad(per_sample.sum(), inputs, create_graph=True)
        return 0.5 * self.gamma * grad.float().pow(2).flatten(1).sum(1).mean()


class PseudoHuberLoss:
    """``sqrt(||x0_hat - x0||^2 + c^2) - c`` per sample, averaged (SF-V Sec. 3.3; Song & Dhariwal 2023).

    ``c=None`` uses iCT's ``c = 0.00054 * sqrt(d)`` with ``d`` the elements per sample (the paper
    does not publish its ``c``).
    """

    def __init__(self, c: float | None = None):
        self.c = c

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = (pred.float() - target.float()).flatten(1)
        c = self.c if self.c is not None else 0.00054 * math.sqrt(diff.shape[1])
        return ((diff.pow(2).sum(1) + c * c).sqrt() - c).mean()


class GeneratorLoss:
    """``L_adv + lambda * L_recon`` with ``L_adv = -E[D(fake)]`` (hinge generator loss) and
    ``L_recon`` the pseudo-Huber distance of the one-step prediction to the clean latents."""

    def __init__(self, recon_weight: float = 0.1, huber_c: float | None = None):
        self.recon_weight = recon_weight
        self.recon = PseudoHuberLoss(huber_c)

    def __call__(self, fake_logits: Sequence[torch.Tensor], pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        adv = -_mean_over_heads(fake_logits)
        recon = self.recon(pred, target)
        return {"g_adv": adv, "g_recon": recon, "g_loss": adv + self.recon_weight * recon}
