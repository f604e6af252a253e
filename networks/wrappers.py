"""Thin ``nn.Module`` wrappers that give each diffusers/transformers network its spec's signature.

Each wrapper takes the spec's inputs positionally, in spec order, and returns the spec's single
output, so that ``torch.onnx.export`` and the PyTorch engine see exactly the exported contract.
"""

from __future__ import annotations

import torch
from torch import nn

from contract.environment import quiet_torchvision_fallback

with quiet_torchvision_fallback():  # the SVD pipeline's module imports the image processors
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing


class ImageEncoderNet(nn.Module):
    """``pixel_values [B, 3, 224, 224]`` -> ``image_embeds [B, D]`` (CLIP's projected embedding)."""

    def __init__(self, image_encoder: nn.Module):
        super().__init__()
        self.image_encoder = image_encoder

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(pixel_values=pixel_values).image_embeds


class VaeEncoderNet(nn.Module):
    """``image [B, 3, H, W]`` in [-1, 1] -> ``latent [B, 4, H/8, W/8]``, the distribution's mode."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(image).latent_dist.mode()


class UNetNet(nn.Module):
    """SVD UNet: ``sample [B, F, 8, h, w]``, ``timestep [B]``, ``encoder_hidden_states [B, 1, D]``,
    ``added_time_ids [B, 3]`` -> ``noise_pred [B, F, 4, h, w]`` (the raw network output)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids) -> torch.Tensor:
        return self.unet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states, added_time_ids=added_time_ids, return_dict=False
        )[0]


class VaeDecoderNet(nn.Module):
    """Temporal decoder: ``latent [F, 4, h, w]`` (already divided by scaling_factor) -> ``sample [F, 3, 8h, 8w]``.

    ``num_frames`` is taken from the input's first axis, so the traced graph keeps it symbolic
    and one graph decodes chunks of any length.
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent, num_frames=latent.shape[0]).sample


class ClipPreprocessNet(nn.Module):
    """CLIP's view of the image as diffusers' ``StableVideoDiffusionPipeline._encode_image`` computes it:
    ``pixels`` uint8 ``[H, W, 3]`` -> ``pixel_values [1, 3, S, S]``.

    Scale to [-1, 1] *before* the antialiased resize (to match the original implementation), back
    to [0, 1], then ``(x - mean) / std``. diffusers' own resize is called, so this reference never
    drifts from it; :mod:`export.preprocess_graph` is its ONNX lowering.
    """

    def __init__(self, size: int, mean, std):
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.to(torch.float32) / 255.0).permute(2, 0, 1)[None]
        x = _resize_with_antialiasing(x * 2.0 - 1.0, (self.size, self.size))
        x = (x + 1.0) / 2.0
        return (x - self.mean) / self.std


def build_network(name: str, model) -> nn.Module:
    """The wrapper for network ``name`` around the loaded :class:`networks.models.SVDModel`."""
    if name == "clip_preprocess":
        cfg = model.config
        return ClipPreprocessNet(cfg.clip_image_size, cfg.image_mean, cfg.image_std).eval()
    if name == "image_encoder":
        return ImageEncoderNet(model.image_encoder).eval()
    if name == "vae_encoder":
        return VaeEncoderNet(model.vae).eval()
    if name == "unet":
        return UNetNet(model.unet).eval()
    if name == "vae_decoder":
        return VaeDecoderNet(model.vae).eval()
    if name == "vae_decoder_fast":  # already takes the decoder's signature (networks/fast_decoder.py)
        if model.fast_decoder is None:
            raise KeyError(f"{name}: no fast decoder attached to the model (SVDModel.fast_decoder)")
        return model.fast_decoder.eval()
    raise KeyError(name)
