"""Model sources: load an SVD-family directory in the diffusers layout, or write a built-in one.

A model directory has the layout of ``stabilityai/stable-video-diffusion-img2vid(-xt)``::

    model_index.json
    unet/{config.json, diffusion_pytorch_model.safetensors}
    vae/{config.json, diffusion_pytorch_model.safetensors}
    image_encoder/{config.json, model.safetensors}
    feature_extractor/preprocessor_config.json
    scheduler/scheduler_config.json

Built-in sources write exactly that layout with random weights, so that they load through the
same code path as real weights:

- ``tiny``: a few hundred thousand parameters, seeded, for tests and CPU demos;
- ``tiny-xt``: ``tiny`` laid out as SVD-XT (25 frames by default), as XT checkpoints are;
- ``svd-random``: the real SVD configs (1.5 B UNet, ViT-H/14 CLIP) for benchmarks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from contract.atomic import atomic_directory
from contract.environment import quiet_torchvision_fallback
from contract.errors import ModelLayoutError
from contract.specs import ModelConfig

with quiet_torchvision_fallback():  # the image processors, without transformers' warning when torchvision is absent
    from diffusers import StableVideoDiffusionPipeline
    from transformers import CLIPImageProcessor

log = logging.getLogger(__name__)

BUILTIN_MODELS = ("tiny", "tiny-xt", "svd-random")

# Component folder -> weights file name written by save_pretrained with safetensors.
_WEIGHTS = {
    "unet": "diffusion_pytorch_model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "image_encoder": "model.safetensors",
}
_CONFIGS = {
    "unet": "config.json",
    "vae": "config.json",
    "image_encoder": "config.json",
    "feature_extractor": "preprocessor_config.json",
    "scheduler": "scheduler_config.json",
}

# SVD's scheduler config (EulerDiscreteScheduler, EDM v-prediction with Karras sigmas).
SVD_SCHEDULER_CONFIG = dict(
    beta_end=0.012,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    interpolation_type="linear",
    num_train_timesteps=1000,
    prediction_type="v_prediction",
    sigma_max=700.0,
    sigma_min=0.002,
    steps_offset=1,
    timestep_spacing="leading",
    timestep_type="continuous",
    use_karras_sigmas=True,
)


@dataclass
class SVDModel:
    """The loaded networks of an SVD-family model, in eval mode, fp32 on the CPU."""

    image_encoder: torch.nn.Module  # CLIPVisionModelWithProjection
    vae: torch.nn.Module  # AutoencoderKLTemporalDecoder
    unet: torch.nn.Module  # UNetSpatioTemporalConditionModel
    feature_extractor: object  # CLIPImageProcessor
    scheduler_config: dict
    config: ModelConfig
    source: str  # where the model came from (a path or a built-in name)
    unet_source: str  # where the UNet came from (differs when --unet overrides it)
    fast_decoder: torch.nn.Module | None = None  # a distilled decoder (networks.fast_decoder), when one is attached


# --------------------------------------------------------------------------- configs


def _tiny_configs() -> dict:
    """Small configs of the real classes (diffusers' own SVD test config, VAE at 8x downsampling)."""
    return dict(
        unet=dict(
            sample_size=8,
            in_channels=8,
            out_channels=4,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            block_out_channels=(32, 64),
            layers_per_block=2,
            cross_attention_dim=32,
            num_attention_heads=8,
            addition_time_embed_dim=32,
            projection_class_embeddings_input_dim=96,  # 3 added time ids x 32
            num_frames=14,
        ),
        # Four blocks so that the VAE downsamples by 8, as SVD's does; GroupNorm needs 32 channels.
        vae=dict(
            block_out_channels=(32, 32, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 4,
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=1,
            sample_size=64,
        ),
        # 224x224 input with 14-pixel patches like ViT-H/14, but 32 wide and 2 layers deep.
        image_encoder=dict(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            image_size=224,
            patch_size=14,
            projection_dim=32,
        ),
    )


def _tiny_xt_configs() -> dict:
    """``tiny`` with SVD-XT's frame count (img2vid-xt's unet/config.json differs from img2vid's in num_frames only)."""
    configs = _tiny_configs()
    configs["unet"]["num_frames"] = 25
    return configs


def _svd_configs() -> dict:
    """The configs of stabilityai/stable-video-diffusion-img2vid (its unet/, vae/ and image_encoder/ config.json)."""
    return dict(
        unet=dict(
            sample_size=96,
            in_channels=8,
            out_channels=4,
            down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
            up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=1024,
            num_attention_heads=(5, 10, 20, 20),
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=768,
            num_frames=14,
        ),
        vae=dict(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=2,
            sample_size=768,
        ),
        image_encoder=dict(
            hidden_size=1280,
            intermediate_size=5120,
            num_attention_heads=16,
            num_hidden_layers=32,
            image_size=224,
            patch_size=14,
            projection_dim=1024,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
        ),
    )


# --------------------------------------------------------------------------- writers


def write_random_model(path: str | os.PathLike, configs: dict, seed: int = 0) -> Path:
    """Write a random-initialised SVD-architecture model directory in the diffusers layout.

    The networks are built from the real classes with ``configs`` and a fixed ``seed``, then
    saved with ``save_pretrained`` (safetensors). The directory appears atomically: it is
    written under a temporary name and renamed when complete.
    """
    path = Path(path)
    with atomic_directory(path) as tmp:
        # The constructors draw from torch's global RNG; seed it inside a fork so the caller's
        # random state is the same afterwards.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = UNetSpatioTemporalConditionModel(**configs["unet"])
            torch.manual_seed(seed + 1)
            vae = AutoencoderKLTemporalDecoder(**configs["vae"])
            torch.manual_seed(seed + 2)
            image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**configs["image_encoder"]))
        size = configs["image_encoder"]["image_size"]
        feature_extractor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        scheduler = EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG)
        pipe = StableVideoDiffusionPipeline(
            vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler, feature_extractor=feature_extractor
        )
        pipe.save_pretrained(tmp, safe_serialization=True)
    return path


def cache_dir() -> Path:
    """Where built-in models are written: ``$SFV_CACHE`` or ``~/.cache/sfv-deploy``."""
    root = os.environ.get("SFV_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sfv-deploy"
    return Path(root)


def builtin_model_dir(name: str, seed: int = 0) -> Path:
    """Return the directory of built-in model ``name``, writing it on first use.

    The directory name carries a hash of the configs and seed, so a changed config never
    reuses a stale directory.
    """
    configs = {"tiny": _tiny_configs, "tiny-xt": _tiny_xt_configs, "svd-random": _svd_configs}[name]()
    key = hashlib.sha256(json.dumps([configs, seed], sort_keys=True, default=list).encode()).hexdigest()[:12]
    path = cache_dir() / "models" / f"{name}-{key}"
    if not (path / "model_index.json").is_file():
        log.info("writing built-in model %r to %s", name, path)
        write_random_model(path, configs, seed=seed)
    return path


def resolve_model_dir(model: str | os.PathLike) -> Path:
    """Map ``tiny`` / ``svd-random`` to their cached directory; pass other paths through."""
    if str(model) in BUILTIN_MODELS:
        return builtin_model_dir(str(model))
    return Path(model)


# --------------------------------------------------------------------------- loading


def check_layout(path: Path, components=("unet", "vae", "image_encoder", "feature_extractor", "scheduler")) -> None:
    """Raise :class:`ModelLayoutError` naming the first missing piece of the diffusers layout."""
    if not path.exists():
        raise ModelLayoutError(
            f"model directory {path} does not exist; pass a diffusers SVD directory "
            f"(e.g. a local copy of stabilityai/stable-video-diffusion-img2vid) or one of {', '.join(BUILTIN_MODELS)}"
        )
    if not path.is_dir():
        raise ModelLayoutError(f"{path} is a file, not a model directory")
    for component in components:
        config = path / component / _CONFIGS[component]
        if not config.is_file():
            raise ModelLayoutError(
                f"{path} is not in the diffusers SVD layout: missing {component}/{_CONFIGS[component]}"
            )
        if component in _WEIGHTS:
            _check_weights(path / component)


def _check_weights(folder: Path) -> None:
    if list(folder.glob("*.safetensors")) or list(folder.glob("*.safetensors.index.json")):
        return
    if list(folder.glob("*.bin")) or list(folder.glob("*.ckpt")) or list(folder.glob("*.pt")):
        raise ModelLayoutError(
            f"{folder} holds only pickle weights (.bin/.ckpt/.pt), which this toolkit never loads; "
            "convert them to safetensors (load once in a trusted environment and save_pretrained(..., "
            "safe_serialization=True))"
        )
    raise ModelLayoutError(f"missing weights file in {folder}: expected {_WEIGHTS.get(folder.name, '*.safetensors')}")


def _unet_folder(path: Path) -> Path:
    """Accept either a UNet folder (config.json + weights) or a model directory holding unet/."""
    if (path / "config.json").is_file():
        return path
    if (path / "unet" / "config.json").is_file():
        return path / "unet"
    if not path.exists():
        raise ModelLayoutError(f"UNet directory {path} does not exist")
    raise ModelLayoutError(
        f"{path} is not a UNet directory: expected config.json and diffusion_pytorch_model.safetensors "
        "(as written by save_pretrained, e.g. the unet/ folder of a training run)"
    )


def load_unet_file(path: Path, config_dir: Path) -> torch.nn.Module:
    """A UNet from one ``.safetensors`` state dict in diffusers keys (AnimateLCM-SVD-xt's format).

    The architecture comes from ``config_dir/config.json`` (the base model's ``unet/``); every key
    must match, as ``load_state_dict(strict=True)`` demands (:class:`ModelLayoutError` naming the
    missing and unexpected ones otherwise). Read with safetensors, never with pickle.
    """
    if path.suffix != ".safetensors":
        raise ModelLayoutError(
            f"--unet {path} is a file but not .safetensors; this toolkit never loads pickle weights (.bin/.ckpt/.pt/.pth): "
            "convert it to safetensors (safetensors.torch.save_file(state_dict, 'unet.safetensors') in a trusted environment)"
        )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLayoutError(f"{path} is not a readable safetensors file ({exc})") from None
    unet = UNetSpatioTemporalConditionModel.from_config(UNetSpatioTemporalConditionModel.load_config(config_dir))
    own = unet.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        def some(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "") if keys else "none"

        raise ModelLayoutError(
            f"{path} does not fit the UNet of {config_dir}: {len(missing)} missing keys ({some(missing)}), "
            f"{len(unexpected)} unexpected keys ({some(unexpected)}); --unet FILE takes a UNetSpatioTemporalConditionModel "
            "state dict in diffusers' key layout (no 'model.diffusion_model.' prefix) for this model's UNet config"
        )
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise ModelLayoutError(f"{path} has tensors of other shapes than the UNet of {config_dir}: {', '.join(wrong[:3])}; "
                               "use the base model the weights were trained from (e.g. SVD-XT for AnimateLCM-SVD-xt)")
    unet.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    return unet


def _image_processor_class():
    """CLIP's image processor: the torchvision-backed class when torchvision is installed, else
    the PIL-backed one (what transformers falls back to anyway, minus its warning on every load)."""
    if importlib.util.find_spec("torchvision") is None and hasattr(transformers, "CLIPImageProcessorPil"):
        return transformers.CLIPImageProcessorPil
    return transformers.CLIPImageProcessor


def _source_name(model: str | os.PathLike) -> str:
    """A built-in name as it is (``tiny``), a directory as its absolute path."""
    return str(model) if str(model) in BUILTIN_MODELS else str(Path(model).resolve())


def load_model(model: str | os.PathLike, unet: str | os.PathLike | None = None) -> SVDModel:
    """Load an SVD-family model directory (or a built-in name) with the diffusers/transformers classes.

    Args:
        model: a diffusers SVD directory, ``tiny`` or ``svd-random``.
        unet: optional UNet that replaces the model's: a directory (e.g. a distilled SF-V UNet) or
            one ``.safetensors`` state dict in diffusers keys (:func:`load_unet_file`).
    """
    path = resolve_model_dir(model)
    unet_file = unet is not None and Path(unet).is_file()
    # A state-dict file takes its architecture from the base model's unet/config.json.
    check_layout(path, components=("vae", "image_encoder", "feature_extractor", "scheduler") + (() if unet and not unet_file else ("unet",)))
    unet_path = Path(unet) if unet_file else _unet_folder(Path(unet)) if unet else path / "unet"
    if not unet_file:
        _check_weights(unet_path)

    kwargs = dict(use_safetensors=True, torch_dtype=torch.float32)
    try:
        if unet_file:
            unet_model = load_unet_file(unet_path, path / "unet")
        else:
            unet_model = UNetSpatioTemporalConditionModel.from_pretrained(unet_path, **kwargs)
        vae = AutoencoderKLTemporalDecoder.from_pretrained(path / "vae", **kwargs)
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(
            path / "image_encoder", use_safetensors=True, dtype=torch.float32
        )
        feature_extractor = _image_processor_class().from_pretrained(path / "feature_extractor")
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLayoutError(f"could not load model from {path}: {exc}") from exc
    scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    for module in (unet_model, vae, image_encoder):
        module.eval().requires_grad_(False)
    config = ModelConfig.from_components(unet_model, vae, image_encoder, feature_extractor, scheduler_config)
    return SVDModel(
        image_encoder=image_encoder,
        vae=vae,
        unet=unet_model,
        feature_extractor=feature_extractor,
        scheduler_config=scheduler_config,
        config=config,
        # Absolute paths, so that a bundle's manifest names its sources from any working directory.
        source=_source_name(model),
        unet_source=str(unet_path.resolve()) if unet else _source_name(model),
    )
