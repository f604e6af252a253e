"""SF-V's discriminator (paper Sec. 3.2): the teacher UNet's encoder, frozen, plus trainable heads.

- Backbone: a copy of the UNet's ``conv_in``, time/added-time embeddings, every down block and
  (optionally) the mid block, with the teacher's weights and ``requires_grad=False``. It reads
  the same preconditioned input as the UNet (``cat([c_in x', image latent])``, ``c_noise``, CLIP
  embedding, added_time_ids) and returns each block's output ``[B*F, C_k, h_k, w_k]``.
- Heads: after each block one spatial head (features as ``(B*F, C, h, w)``: Conv2d -> ResBlock2d
  -> Conv2d) and one temporal head (features as ``(B*h*w, C, F)``: Conv1d -> ResBlock1d -> Conv1d).
  SVD's UNet has 4 down blocks (8 heads); the tiny test UNet has 2.
- Projection conditioning (Miyato & Koyama 2018): the condition ``[image embedding, noise-level
  embedding, frame-index embedding]`` goes through a per-head affine map and is dot-multiplied
  with the head's per-pixel features, giving one logit per pixel (and frame).
"""

from __future__ import annotations

import copy
import math

import torch
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn

from training.precondition import Conditioning, unet_inputs


class UNetEncoder(nn.Module):
    """Frozen copy of a ``UNetSpatioTemporalConditionModel``'s encoder (down blocks, optional mid block)."""

    def __init__(self, unet: nn.Module, use_mid_block: bool = False):
        super().__init__()
        unet = getattr(unet, "module", unet)  # unwrap DDP
        for name in ("conv_in", "time_proj", "time_embedding", "add_time_proj", "add_embedding", "down_blocks"):
            setattr(self, name, copy.deepcopy(getattr(unet, name)))
        self.mid_block = copy.deepcopy(unet.mid_block) if use_mid_block else None
        self.channels = list(unet.config.block_out_channels) + ([unet.config.block_out_channels[-1]] if use_mid_block else [])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # always eval: the backbone is a fixed feature extractor
        return super().train(False)

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids) -> list[torch.Tensor]:
        """``sample [B, F, 8, h, w]``, ``timestep [B]``, ``encoder_hidden_states [B, 1, D]``,
        ``added_time_ids [B, 3]`` -> features ``[B*F, C_k, h_k, w_k]`` after each block.

        Mirrors the encoder half of ``UNetSpatioTemporalConditionModel.forward``.
        """
        batch, frames = sample.shape[:2]
        emb = self.time_embedding(self.time_proj(timestep).to(sample.dtype))
        time_embeds = self.add_time_proj(added_time_ids.flatten()).reshape(batch, -1).to(emb.dtype)
        emb = (emb + self.add_embedding(time_embeds)).repeat_interleave(frames, dim=0)
        hidden = encoder_hidden_states.repeat_interleave(frames, dim=0)
        h = self.conv_in(sample.flatten(0, 1))
        indicator = torch.zeros(batch, frames, dtype=h.dtype, device=h.device)
        features = []
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=hidden, image_only_indicator=indicator)
            else:
                h, _ = block(hidden_states=h, temb=emb, image_only_indicator=indicator)
            features.append(h)
        if self.mid_block is not None:
            h = self.mid_block(hidden_states=h, temb=emb, encoder_hidden_states=hidden, image_only_indicator=indicator)
            features.append(h)
        return features


def _groups(channels: int) -> int:
    return math.gcd(32, channels)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv -> GroupNorm -> SiLU -> conv, plus the input (2-D or 1-D convs)."""

    def __init__(self, channels: int, dims: int):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.block = nn.Sequential(
            nn.GroupNorm(_groups(channels), channels),
            nn.SiLU(),
            conv(channels, channels, 3, padding=1),
            nn.GroupNorm(_groups(channels), channels),
            nn.SiLU(),
            conv(channels, channels, 3, padding=1),
        )

    def forward(self, x):
        return x + self.block(x)


class ProjectionHead(nn.Module):
    """Conv -> ResBlock -> Conv over ``[N, C, *spatial]`` and a projection of the condition.

    ``forward(x [N, C, *S], cond [N, Dc, *S or 1s]) -> logits [N, *S]``.
    """

    def __init__(self, in_channels: int, hidden: int, cond_dim: int, dims: int):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.net = nn.Sequential(conv(in_channels, hidden, 3, padding=1), ResBlock(hidden, dims), conv(hidden, hidden, 1))
        self.proj = nn.Linear(cond_dim, hidden)
        self.scale = hidden**-0.5

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        feats = self.net(x)  # [N, K, *S]
        proj = self.proj(cond.movedim(1, -1)).movedim(-1, 1)  # [N, K, *S or 1s]
        return (feats * proj).sum(1) * self.scale


class DiscriminatorHeads(nn.Module):
    """The trainable part: one spatial and (optionally) one temporal head per backbone block.

    ``forward(features, cond, frames) -> list of logits``: spatial ``[B, F, h_k, w_k]`` and
    temporal ``[B, h_k, w_k, F]`` per block (spatial heads first, then temporal).
    """

    def __init__(
        self,
        channels: list[int],
        embed_dim: int,
        head_channels: int = 256,
        cond_embed_dim: int = 64,
        spatial: bool = True,
        temporal: bool = True,
    ):
        super().__init__()
        if not (spatial or temporal):
            raise ValueError("the discriminator needs spatial or temporal heads (or both)")
        self.cond_embed_dim = cond_embed_dim
        cond_dim = embed_dim + 2 * cond_embed_dim
        hidden = [min(c, head_channels) for c in channels]
        self.spatial = nn.ModuleList([ProjectionHead(c, k, cond_dim, 2) for c, k in zip(channels, hidden)]) if spatial else None
        self.temporal = nn.ModuleList([ProjectionHead(c, k, cond_dim, 1) for c, k in zip(channels, hidden)]) if temporal else None

    def condition(self, image_embeds: torch.Tensor, c_noise: torch.Tensor, frames: int) -> torch.Tensor:
        """``[B, F, D + 2E]``: image embedding, sinusoidal noise-level and frame-index embeddings."""
        batch = image_embeds.shape[0]
        e = self.cond_embed_dim
        noise = get_timestep_embedding(c_noise.float() * 1000, e)  # c_noise in ~[-1.6, 1.6]: spread it out
        index = get_timestep_embedding(torch.arange(frames, device=c_noise.device).float(), e)
        return torch.cat(
            [
                image_embeds.reshape(batch, 1, -1).expand(-1, frames, -1).float(),
                noise[:, None].expand(-1, frames, -1),
                index[None].expand(batch, -1, -1),
            ],
            dim=-1,
        )

    def forward(self, features: list[torch.Tensor], image_embeds: torch.Tensor, c_noise: torch.Tensor) -> list[torch.Tensor]:
        batch = image_embeds.shape[0]
        frames = features[0].shape[0] // batch
        cond = self.condition(image_embeds, c_noise, frames)  # [B, F, Dc]
        out = []
        if self.spatial is not None:
            c = cond.flatten(0, 1)[:, :, None, None]  # [B*F, Dc, 1, 1]
            for head, f in zip(self.spatial, features):
                out.append(head(f, c.to(f.dtype)).reshape(batch, frames, *f.shape[-2:]))
        if self.temporal is not None:
            for head, f in zip(self.temporal, features):
                _, ch, h, w = f.shape
                x = f.reshape(batch, frames, ch, h, w).permute(0, 3, 4, 2, 1).reshape(batch * h * w, ch, frames)
                c = cond.permute(0, 2, 1)[:, None, None].expand(-1, h, w, -1, -1).reshape(batch * h * w, -1, frames)
                out.append(head(x, c.to(f.dtype)).reshape(batch, h, w, frames))
        return out


def discriminate(
    backbone: UNetEncoder,
    heads: nn.Module,
    x_noisy: torch.Tensor,
    sigma: torch.Tensor,
    cond: Conditioning,
) -> list[torch.Tensor]:
    """Per-pixel logits for re-noised latents ``x' = x0 + s' eps`` (``[B, F, C, h, w]``) at ``s' [B]``.

    The backbone sees the preconditioned input ``c_in(s') x'`` like the UNet does.
    """
    inputs = unet_inputs(x_noisy, sigma, cond)
    features = backbone(**inputs)
    return heads(features, cond.image_embeds, inputs["timestep"])
