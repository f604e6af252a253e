"""One declarative spec per network: names, dtypes, symbolic shapes, sample inputs, TRT profiles.

Every part of the toolkit reads these specs and nobody re-states a shape: the ONNX exporter
(input/output names, dynamic axes), validation (sample inputs at several shapes), the TensorRT
builder (min/opt/max profiles), the engines (one input check, buffer shapes) and the manifest.

Symbolic dimensions are strings:

- ``batch``: videos (or CFG-doubled videos for the UNet);
- ``frames``: frames per video; for the decoder, the frames of one decode chunk;
- ``height``, ``width``: pixels; ``latent_height``, ``latent_width``: pixels // vae_scale_factor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from contract.errors import BundleError, ShapeError, UnknownNetworkError

# The four neural networks of SVD, in pipeline order.
NETWORKS = ("image_encoder", "vae_encoder", "unet", "vae_decoder")
# Small graphs that hold the runtime's pre-processing numerics, so that every runtime (Python,
# C++) computes them identically: CLIP's antialiased resize and normalisation.
PREPROCESS_NETWORKS = ("clip_preprocess",)
# Networks a bundle may add: a fast decoder (distilled by training.decoder, or TAESDV), vae_decoder's signature.
OPTIONAL_NETWORKS = ("vae_decoder_fast",)
# The stages a clip's time is reported in, pipeline order (the pipeline's timings, the benchmark
# reports, the latency gate): CLIP's pre-processing graph, the four networks, and the sampler, i.e.
# the denoising loop outside its UNet calls (the sampler's arithmetic, copies, conversions).
SAMPLER_STAGE = "sampler"
STAGES = ("preprocess", "image_encoder", "vae_encoder", "unet", SAMPLER_STAGE, "vae_decoder")
SYMBOLS = ("batch", "frames", "height", "width", "latent_height", "latent_width", "image_height", "image_width")
_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "uint8": np.uint8}


@dataclass(frozen=True)
class ModelConfig:
    """The values of a model's configs that shapes and the runtime depend on."""

    latent_channels: int = 4  # VAE latent channels (the UNet predicts these)
    unet_in_channels: int = 8  # noisy latent + conditioning-image latent, concatenated
    vae_scale_factor: int = 8  # pixels per latent pixel
    unet_downsample: int = 8  # latent pixels per UNet bottleneck pixel
    embed_dim: int = 1024  # CLIP projection dim == UNet cross_attention_dim
    clip_image_size: int = 224  # CLIP's fixed input resolution
    image_mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)  # CLIP normalisation
    image_std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)
    scaling_factor: float = 0.18215  # VAE latent scale (x0 latents are multiplied by it)
    num_frames: int = 14  # default frame count (14 img2vid, 25 img2vid-xt)
    default_height: int = 576
    default_width: int = 1024
    num_time_ids: int = 3  # added_time_ids = [fps - 1, motion_bucket_id, noise_aug_strength]
    sigma_min: float = 0.002  # EDM schedule range from the scheduler config
    sigma_max: float = 700.0
    prediction_type: str = "v_prediction"
    # Generation defaults (diffusers' StableVideoDiffusionPipeline.__call__): the one place they live.
    steps: int = 25  # Euler steps (SF-V: 1)
    min_guidance: float = 1.0  # CFG weight of the first frame
    max_guidance: float = 3.0  # CFG weight of the last frame (<= 1 turns CFG off)
    fps: int = 7  # frame rate; the UNet is conditioned on fps - 1
    motion_bucket_id: int = 127  # motion conditioning
    noise_aug_strength: float = 0.02  # noise added to the conditioning image

    @property
    def pixel_multiple(self) -> int:
        """Height and width must be multiples of this (VAE and UNet downsampling together)."""
        return self.vae_scale_factor * self.unet_downsample

    @classmethod
    def from_components(cls, unet, vae, image_encoder, feature_extractor, scheduler_config: Mapping) -> "ModelConfig":
        vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        n_time_ids = unet.config.projection_class_embeddings_input_dim // unet.config.addition_time_embed_dim
        return cls(
            latent_channels=vae.config.latent_channels,
            unet_in_channels=unet.config.in_channels,
            vae_scale_factor=vae_scale,
            unet_downsample=2 ** (len(unet.config.block_out_channels) - 1),
            embed_dim=unet.config.cross_attention_dim,
            clip_image_size=image_encoder.config.image_size,
            image_mean=tuple(float(v) for v in feature_extractor.image_mean),
            image_std=tuple(float(v) for v in feature_extractor.image_std),
            scaling_factor=float(vae.config.scaling_factor),
            num_frames=int(unet.config.num_frames),
            default_height=int(unet.config.sample_size) * vae_scale,
            default_width=int(unet.config.sample_size) * vae_scale,
            num_time_ids=int(n_time_ids),
            sigma_min=float(scheduler_config.get("sigma_min", 0.002)),
            sigma_max=float(scheduler_config.get("sigma_max", 700.0)),
            prediction_type=str(scheduler_config.get("prediction_type", "v_prediction")),
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> "ModelConfig":
        """The manifest's ``model.config``. Every field is required: a missing key is an error, never
        a default (the defaults above are SVD's, and a bundle of another model must not take them)."""
        missing = [k for k in cls.__dataclass_fields__ if k not in data]
        if missing:
            raise BundleError(f"the manifest's model.config lacks {', '.join(missing)}; re-export the bundle with this toolkit")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("image_mean", "image_std"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, dtype and shape (ints are fixed, strings are symbolic)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def resolve(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else int(dims[d]) for d in self.shape)

    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping) -> "TensorSpec":
        return cls(name=data["name"], dtype=data["dtype"], shape=tuple(data["shape"]))


@dataclass(frozen=True)
class NetworkSpec:
    """What one network takes and gives, plus per-network export/validation settings."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    atol: float  # fp32 validation tolerance (max abs error vs PyTorch)
    atol_fp16: float  # fp16 validation tolerance
    # TensorRT profile policy: (symbol, range it follows) pairs, the range being a field or
    # property of contract.trt_profiles.ProfileRanges (e.g. the decoder's frames follow
    # "decode_chunk", the UNet's batch "guided_batch", doubled for classifier-free guidance).
    profile_symbols: tuple[tuple[str, str], ...] = (("batch", "batch"),)
    fp32_op_types: tuple[str, ...] = field(default=())  # ops kept in fp32 under --fp16

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export``'s dynamic_axes for every input and output."""
        return {t.name: t.dynamic_axes() for t in self.inputs + self.outputs if t.dynamic_axes()}

    # ------------------------------------------------------------------ checking

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Check names, dtypes, ranks and symbolic dims; return the bound symbol values.

        The same for every precision: each graph variant keeps the fp32 graph's input and output
        types (fp16/int8/fp8 live inside the graph), so callers always feed the spec's dtypes.

        The one place where engine inputs are checked. A symbol used twice must bind the same
        value (e.g. ``batch`` in ``sample`` and ``added_time_ids``).
        """
        names = set(inputs)
        if names != set(self.input_names):
            missing = sorted(set(self.input_names) - names)
            extra = sorted(names - set(self.input_names))
            raise ShapeError(
                f"{self.name}: expected inputs {self.input_names}; missing {missing}, unexpected {extra}"
            )
        bound: dict[str, int] = {}
        for t in self.inputs:
            value = inputs[t.name]
            if not isinstance(value, np.ndarray):
                raise ShapeError(f"{self.name}.{t.name}: expected a numpy array, got {type(value).__name__}")
            if value.dtype != _DTYPES[t.dtype]:
                raise ShapeError(f"{self.name}.{t.name}: dtype {value.dtype}, expected {t.dtype}")
            if value.ndim != len(t.shape):
                raise ShapeError(
                    f"{self.name}.{t.name}: rank {value.ndim} (shape {list(value.shape)}), "
                    f"expected rank {len(t.shape)} {list(t.shape)}"
                )
            for axis, (want_dim, got) in enumerate(zip(t.shape, value.shape)):
                if isinstance(want_dim, int):
                    if got != want_dim:
                        raise ShapeError(
                            f"{self.name}.{t.name}: axis {axis} is {got}, expected {want_dim} "
                            f"(shape {list(value.shape)} vs {list(t.shape)})"
                        )
                elif bound.setdefault(want_dim, got) != got:
                    raise ShapeError(
                        f"{self.name}.{t.name}: axis {axis} ({want_dim}) is {got} but another input has "
                        f"{want_dim}={bound[want_dim]}"
                    )
                elif got < 1:
                    raise ShapeError(f"{self.name}.{t.name}: axis {axis} ({want_dim}) is empty")
        return bound

    # ------------------------------------------------------------------ samples and profiles

    def sample_inputs(self, dims: Mapping[str, int], config: "ModelConfig", seed: int = 0) -> dict[str, np.ndarray]:
        """Random numpy inputs at ``dims`` (symbol -> size) with the value ranges the pipeline feeds.

        ``timestep`` is ``c_noise = 0.25 ln sigma`` over the model's sigma range; ``added_time_ids``
        are the model's default conditioning; ``image`` is in [-1, 1]; uint8 inputs are pixels.
        """
        rng = np.random.default_rng(seed)
        out = {}
        for t in self.inputs:
            shape = t.resolve(dims)
            if t.name == "timestep":
                low, high = math.log(config.sigma_min), math.log(config.sigma_max)
                out[t.name] = (0.25 * rng.uniform(low, high, shape)).astype(np.float32)
            elif t.name == "added_time_ids":
                ids = [config.fps - 1, config.motion_bucket_id, config.noise_aug_strength][: shape[-1]]
                out[t.name] = np.broadcast_to(np.asarray(ids, np.float32), shape).copy()
            elif t.name == "image":
                out[t.name] = rng.uniform(-1, 1, shape).astype(np.float32)
            elif t.dtype == "uint8":
                out[t.name] = rng.integers(0, 256, shape, dtype=np.uint8)
            else:
                out[t.name] = rng.standard_normal(shape, dtype=np.float32)
        return out

    def profile(self, config: ModelConfig, ranges: Mapping[str, tuple[int, int, int]]) -> dict[str, tuple[tuple[int, ...], ...]]:
        """TensorRT min/opt/max shapes per input from pixel-space ranges.

        Args:
            ranges: ``{"batch"|"frames"|"height"|"width": (min, opt, max)}``; symbols this
                network does not use are ignored, missing ones raise.
        """
        result = {}
        for t in self.inputs:
            shapes = []
            for k in range(3):
                dims = {s: ranges[s][k] for s in ("batch", "frames", "height", "width") if s in ranges}
                dims = expand_dims(dims, config)
                try:
                    shapes.append(t.resolve(dims))
                except KeyError as exc:
                    raise ShapeError(f"{self.name}: profile needs a range for {exc.args[0]!r}") from None
            result[t.name] = tuple(shapes)
        return result

    def to_json(self) -> dict:
        return {
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }


def expand_dims(dims: Mapping[str, int], config: ModelConfig) -> dict[str, int]:
    """Add latent_height/latent_width derived from height/width."""
    out = dict(dims)
    if "height" in dims:
        out["latent_height"] = dims["height"] // config.vae_scale_factor
    if "width" in dims:
        out["latent_width"] = dims["width"] // config.vae_scale_factor
    return out


def check_resolution(config: ModelConfig, height: int, width: int) -> None:
    """Raise :class:`ShapeError` unless height/width suit the VAE and UNet downsampling."""
    m = config.pixel_multiple
    if height < m or width < m or height % m or width % m:
        raise ShapeError(
            f"height {height} x width {width} is not supported: both must be positive multiples of {m} "
            f"(VAE downsamples by {config.vae_scale_factor}, the UNet by {config.unet_downsample} more); "
            f"try {max(m, round(height / m) * m)} x {max(m, round(width / m) * m)}"
        )


def check_network_names(names, known=NETWORKS) -> list[str]:
    """``names`` in pipeline order, or :class:`UnknownNetworkError` naming the known ones."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UnknownNetworkError(f"unknown network(s) {', '.join(map(repr, unknown))}; the networks are {', '.join(known)}")
    return [n for n in known if n in names]


def build_specs(config: ModelConfig) -> dict[str, NetworkSpec]:
    """Every network spec for a model config, keyed by network name (in pipeline order)."""
    c, lat, emb, clip = config.unet_in_channels, config.latent_channels, config.embed_dim, config.clip_image_size
    specs = {
        # CLIP's view of the conditioning image: RGB8 pixels of any size -> the encoder's input,
        # with diffusers' antialiased resize (Gaussian blur + bicubic) and CLIP normalisation.
        "clip_preprocess": NetworkSpec(
            name="clip_preprocess",
            inputs=(TensorSpec("pixels", "uint8", ("image_height", "image_width", 3)),),
            outputs=(TensorSpec("pixel_values", "float32", (1, 3, clip, clip)),),
            # The graph's bicubic matrices sum the same four taps as PyTorch in another order:
            # measured <= 3.4e-6 from 2x2 to 1200x700 images (values span about [-2, 2]).
            atol=2e-5,
            atol_fp16=2e-5,
            profile_symbols=(),
        ),
        # CLIP image encoder: normalised 224x224 pixels -> projected image embedding.
        "image_encoder": NetworkSpec(
            name="image_encoder",
            inputs=(TensorSpec("pixel_values", "float32", ("batch", 3, clip, clip)),),
            outputs=(TensorSpec("image_embeds", "float32", ("batch", emb)),),
            atol=1e-4,
            atol_fp16=5e-2,
            profile_symbols=(("batch", "batch"),),
        ),
        # VAE encoder: image in [-1, 1] -> mode of the latent distribution (unscaled, as SVD uses it).
        "vae_encoder": NetworkSpec(
            name="vae_encoder",
            inputs=(TensorSpec("image", "float32", ("batch", 3, "height", "width")),),
            outputs=(TensorSpec("latent", "float32", ("batch", lat, "latent_height", "latent_width")),),
            atol=1e-4,
            atol_fp16=5e-2,
            profile_symbols=(("batch", "batch"), ("height", "height"), ("width", "width")),
            fp32_op_types=("GroupNormalization", "InstanceNormalization", "ReduceMean", "Softmax", "Pow", "Sqrt"),
        ),
        # Spatio-temporal UNet: preconditioned input (c_in * x concatenated with the image latent),
        # c_noise, CLIP embedding and added time ids -> raw network output F (v-prediction).
        "unet": NetworkSpec(
            name="unet",
            inputs=(
                TensorSpec("sample", "float32", ("batch", "frames", c, "latent_height", "latent_width")),
                TensorSpec("timestep", "float32", ("batch",)),
                TensorSpec("encoder_hidden_states", "float32", ("batch", 1, emb)),
                TensorSpec("added_time_ids", "float32", ("batch", config.num_time_ids)),
            ),
            outputs=(TensorSpec("noise_pred", "float32", ("batch", "frames", lat, "latent_height", "latent_width")),),
            atol=1e-3,
            atol_fp16=1e-1,
            profile_symbols=(("batch", "guided_batch"), ("frames", "frames"), ("height", "height"), ("width", "width")),
        ),
        # Temporal VAE decoder: one chunk of unscaled latents (latents / scaling_factor), all frames
        # of one video, -> pixels in about [-1, 1]. num_frames is the chunk length (axis 0).
        "vae_decoder": NetworkSpec(
            name="vae_decoder",
            inputs=(TensorSpec("latent", "float32", ("frames", lat, "latent_height", "latent_width")),),
            outputs=(TensorSpec("sample", "float32", ("frames", 3, "height", "width")),),
            atol=1e-3,
            atol_fp16=1e-1,
            profile_symbols=(("frames", "decode_chunk"), ("height", "height"), ("width", "width")),
            fp32_op_types=("GroupNormalization", "InstanceNormalization", "ReduceMean", "Softmax", "Pow", "Sqrt"),
        ),
    }
    # Fast decoder (distilled, networks/fast_decoder.py, or TAESDV, networks/taesdv.py): the decoder's
    # signature, tolerances and profile; convolutions, ReLUs and a tanh only, so nothing needs to stay fp32.
    specs["vae_decoder_fast"] = replace(specs["vae_decoder"], name="vae_decoder_fast", fp32_op_types=())
    return specs
