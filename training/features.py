"""The offline video feature network for Frechet distances where I3D weights are not available.

A small 3-D convolutional classifier over latent clips ``[B, F, 4, h, w]``, trained once on the
real clips to predict their motion class (synthetic data's labels), then frozen. Its pooled
penultimate activations ``[B, 2 * width]`` (64) are the features. It sees time through 3-D convolutions,
so videos whose frames collapse onto the conditioning image land far from real motion.
"""

from __future__ import annotations

import torch
from torch import nn


class LatentVideoFeatures(nn.Module):
    """``[B, F, C, h, w]`` latents -> features ``[B, 2 * width]``; ``classify`` adds a linear head."""

    def __init__(self, in_channels: int = 4, num_classes: int = 7, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv3d(width, width, 3, padding=1, stride=(1, 2, 2)),
            nn.SiLU(),
            nn.Conv3d(width, 2 * width, 3, padding=1),
            nn.SiLU(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x.permute(0, 2, 1, 3, 4))  # [B, C, F, h, w] for Conv3d
        return h.mean(dim=(2, 3, 4))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self(x))


def train_feature_net(latents: torch.Tensor, labels: torch.Tensor, steps: int = 400, batch_size: int = 32, lr: float = 1e-3, seed: int = 0) -> tuple[LatentVideoFeatures, float]:
    """Train on ``latents [N, F, C, h, w]`` with ``labels [N]``; returns the frozen net and its train accuracy."""
    if (labels < 0).any():
        raise ValueError("the offline feature net needs labelled clips (use --data synthetic)")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # initialised from the seed alone; the caller's RNG untouched
        torch.manual_seed(seed)
        net = LatentVideoFeatures(latents.shape[2], int(labels.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(latents), (batch_size,), generator=g)
        loss = nn.functional.cross_entropy(net.classify(latents[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        acc = float((net.classify(latents).argmax(1) == labels).float().mean())
    return net, acc
