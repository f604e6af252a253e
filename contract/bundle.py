"""The bundle: a directory of per-network graphs/engines described by ``manifest.json``.

The manifest is the contract between the exporter, the Python runtime and any other runtime
(C++): plain JSON, documented in the README (section "Bundle format"). It is written last and
atomically, so a directory without a manifest is an unfinished export.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from contract.atomic import write_json_atomic
from contract.errors import BundleError
from contract.specs import NETWORKS, OPTIONAL_NETWORKS, PREPROCESS_NETWORKS, ModelConfig, NetworkSpec, TensorSpec, build_specs

MANIFEST = "manifest.json"
# The manifest's JSON Schema (draft 2020-12): what the exporter writes and every reader relies on.
MANIFEST_SCHEMA = Path(__file__).with_name("manifest.schema.json")
FORMAT = "sfv-bundle"
# 2: per-network graph ``variants`` keyed by precision, the ``clip_preprocess`` graph, and the
# generation defaults in ``model.config``. A version-1 reader would misread all three. The optional
# ``sampler`` key (absent: Euler with ``model.config``'s defaults) needs no new version: readers
# that predate it run such a bundle with the Euler sampler.
FORMAT_VERSION = 2
PRECISIONS = ("fp32", "fp16", "int8", "fp8")


SAMPLERS = ("euler", "lcm")


@dataclass(frozen=True)
class LCMParams:
    """The consistency sampler's constants: AnimateLCM-SVD-xt's ``AnimateLCMSVDStochasticIterativeScheduler``
    as the authors' app configures it (``animatelcm_svd/app.py`` in G-U-N/AnimateLCM)."""

    num_train_timesteps: int = 40  # N: the discretisation the UNet was distilled on (Karras levels)
    sigma_min: float = 0.002  # Karras schedule range (SVD's)
    sigma_max: float = 700.0
    sigma_data: float = 1.0  # in c_skip and c_out; SVD's latents use 1
    s_noise: float = 1.0  # scale of the fresh noise between steps
    rho: float = 7.0
    clip_denoised: bool = False  # clamp x0_hat to [-1, 1] (off for latents)


@dataclass(frozen=True)
class SamplerConfig:
    """A bundle's sampler and the generation defaults that belong to it (manifest key ``sampler``).

    ``steps``/``min_guidance``/``max_guidance`` left ``None`` take ``model.config``'s (the Euler
    defaults); ``params`` are the sampler's constants (:class:`LCMParams` for ``lcm``, none for
    ``euler``, whose schedule is ``model.config``'s sigma range).
    """

    name: str = "euler"
    steps: int | None = None
    min_guidance: float | None = None
    max_guidance: float | None = None
    params: LCMParams | None = None

    @classmethod
    def builtin(cls, name: str) -> "SamplerConfig":
        """The defaults a sampler brings to a bundle exported for it (``lcm``: AnimateLCM's 4 steps, guidance 1.0 -> 1.2)."""
        if name == "euler":
            return cls()
        if name == "lcm":
            return cls("lcm", steps=4, min_guidance=1.0, max_guidance=1.2, params=LCMParams())
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")

    def to_json(self) -> dict:
        out = {"name": self.name}
        out.update({k: getattr(self, k) for k in ("steps", "min_guidance", "max_guidance") if getattr(self, k) is not None})
        if self.params is not None:
            out["params"] = dataclasses.asdict(self.params)
        return out

    @classmethod
    def from_json(cls, data) -> "SamplerConfig":
        """Parse the manifest's ``sampler`` (``None``: an older bundle, Euler). :class:`BundleError` says what is wrong."""
        if data is None:
            return cls()
        if not isinstance(data, dict) or data.get("name") not in SAMPLERS:
            name = data.get("name") if isinstance(data, dict) else data
            raise BundleError(f"'sampler' must be an object whose 'name' is one of {', '.join(SAMPLERS)}, got {name!r}")
        unknown = set(data) - {"name", "steps", "min_guidance", "max_guidance", "params"}
        if unknown:
            raise BundleError(f"'sampler' has unknown keys {sorted(unknown)}")
        for key, kind in (("steps", int), ("min_guidance", (int, float)), ("max_guidance", (int, float))):
            v = data.get(key)
            if v is not None and (not isinstance(v, kind) or isinstance(v, bool) or v <= 0):
                raise BundleError(f"'sampler.{key}' must be a positive number, got {v!r}")
        params = data.get("params")
        if data["name"] == "lcm":
            fields = {f.name for f in dataclasses.fields(LCMParams)}
            if not isinstance(params, dict) or set(params) != fields:
                raise BundleError(f"'sampler.params' of lcm must hold exactly {sorted(fields)}, got {params!r}")
            params = LCMParams(**params)
        elif params:
            raise BundleError(f"the euler sampler takes no 'params', got {params!r}")
        return cls(data["name"], data.get("steps"), data.get("min_guidance"), data.get("max_guidance"), params)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class Bundle:
    """A loaded bundle: its directory and parsed manifest."""

    root: Path
    manifest: dict

    # ------------------------------------------------------------------ reading

    @classmethod
    def load(cls, root: str | os.PathLike) -> "Bundle":
        """Read and check ``root/manifest.json``; raise :class:`BundleError` with the fix."""
        root = Path(root)
        if not root.is_dir():
            raise BundleError(f"bundle directory {root} does not exist; create one with `python -m export.onnx --model DIR|tiny --out {root}`")
        path = root / MANIFEST
        if not path.is_file():
            raise BundleError(
                f"{root} has no {MANIFEST}: the export did not finish or this is not a bundle; "
                f"re-run `python -m export.onnx --out {root}`"
            )
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{path} is not valid JSON ({exc}); re-export the bundle") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BundleError(f"{path} is not an {FORMAT} manifest; re-export the bundle")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{path} has format_version {version!r}, this toolkit reads version {FORMAT_VERSION}; "
                "re-export the bundle with this version of the toolkit"
            )
        for key in ("networks", "model"):
            if not isinstance(manifest.get(key), dict):
                raise BundleError(f"{path} lacks the '{key}' section; re-export the bundle")
        config = manifest["model"].get("config")
        if not isinstance(config, dict) or not isinstance(config.get("num_frames"), int):
            # the frame count differs between models (14 SVD, 25 SVD-XT): never assumed
            raise BundleError(f"{path}: model.config lacks num_frames (the model's frame count); re-export the bundle")
        try:
            SamplerConfig.from_json(manifest.get("sampler"))
        except BundleError as exc:
            raise BundleError(f"{path}: {exc}; re-export the bundle (`python -m export.onnx ... --sampler euler|lcm`)") from None
        try:
            ModelConfig.from_json(config)  # every key present: the C++ reader requires the same
        except BundleError as exc:
            raise BundleError(f"{path}: {exc}") from None
        for name, entry in manifest["networks"].items():
            fp32 = entry.get("variants", {}).get("fp32") if isinstance(entry, dict) else None
            if not (isinstance(entry, dict) and "inputs" in entry and "outputs" in entry and isinstance(fp32, dict) and fp32.get("file")):
                raise BundleError(f"{path}: network {name!r} is incomplete (it needs inputs, outputs and an fp32 variant's file); "
                                  "re-export the bundle")
        return cls(root=root, manifest=manifest)

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_json(self.manifest["model"]["config"])

    @property
    def sampler(self) -> SamplerConfig:
        """The bundle's sampler and its defaults (Euler when the manifest has no ``sampler``)."""
        return SamplerConfig.from_json(self.manifest.get("sampler"))

    @property
    def networks(self) -> list[str]:
        """The networks this bundle holds, pre-processing graphs first, then pipeline order, then optional ones."""
        return [n for n in PREPROCESS_NETWORKS + NETWORKS + OPTIONAL_NETWORKS if n in self.manifest["networks"]]

    def precisions(self, network: str) -> list[str]:
        """The graph variants of ``network`` (e.g. ``["fp32", "int8"]``)."""
        return [p for p in PRECISIONS if p in self.entry(network).get("variants", {})]

    def variant(self, network: str, precision: str = "fp32") -> dict:
        """The manifest entry of one graph variant: ``file``, ``sha256``, ``validation``, ..."""
        variants = self.entry(network).get("variants") or {}
        if precision not in variants:
            have = ", ".join(variants) or "none"
            raise BundleError(
                f"bundle {self.root} has no {precision} graph for {network!r} (it has {have}); "
                f"export it with `python -m export.onnx --out {self.root} --precision {precision}`"
            )
        return variants[precision]

    def entry(self, network: str) -> dict:
        try:
            return self.manifest["networks"][network]
        except KeyError:
            raise BundleError(
                f"bundle {self.root} has no network {network!r} (it has {', '.join(self.networks) or 'none'}); "
                f"export it with `python -m export.onnx --networks {network}`"
            ) from None

    def spec(self, network: str) -> NetworkSpec:
        """The network's spec as recorded in the manifest (what the graph really takes)."""
        base = build_specs(self.config)[network]
        entry = self.entry(network)
        return NetworkSpec(
            name=network,
            inputs=tuple(TensorSpec.from_json(t) for t in entry["inputs"]),
            outputs=tuple(TensorSpec.from_json(t) for t in entry["outputs"]),
            atol=base.atol,
            atol_fp16=base.atol_fp16,
            profile_symbols=base.profile_symbols,
            fp32_op_types=base.fp32_op_types,
        )

    def path(self, network: str, precision: str = "fp32") -> Path:
        """Absolute path of a network's graph variant, checked to exist."""
        name = self.variant(network, precision)["file"]
        p = self.root / name
        if not p.is_file():
            raise BundleError(f"bundle {self.root}: {name} (network {network!r}, {precision}) is missing; re-export the bundle")
        return p

    def verify(self, network: str, precision: str = "fp32") -> None:
        """Check a graph variant's ONNX file against the sha256 recorded in the manifest."""
        p = self.path(network, precision)
        want = self.variant(network, precision).get("sha256")
        if want and sha256_file(p) != want:
            raise BundleError(f"{p} does not match the sha256 in the manifest (changed or corrupt); re-export the bundle")

    # ------------------------------------------------------------------ writing

    def save(self) -> None:
        """Write the manifest atomically (temp file + rename)."""
        write_json_atomic(self.root / MANIFEST, self.manifest)


def new_manifest(model_source: str, unet_source: str, config: ModelConfig, export_info: dict,
                 sampler: SamplerConfig | None = None) -> dict:
    """A manifest skeleton; networks are added by the exporter as they are validated."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sampler": (sampler or SamplerConfig()).to_json(),
        "model": {"source": model_source, "unet_source": unet_source, "config": config.to_json()},
        "export": export_info,
        "networks": {},
        "engines": {},
    }
