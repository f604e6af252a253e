"""A measured recipe: which backend, precision and threads each network of a bundle runs on one CPU.

``python -m benchmarks.recipe --bundle B`` measures the candidates on this CPU and writes
``B/recipe.json`` (beside ``manifest.json``, atomically)::

    {"format": 1,
     "cpu": {"model": "Intel(R) Xeon(R) ...", "flags": ["AVX2", "AVX-512", "AVX512-VNNI", ...]},
     "engines": {"image_encoder": {"backend": "openvino", "precision": "bf16", "threads": 2},
                 "unet": {"backend": "onnxruntime", "precision": "int8", "threads": 2}, ...},
     "measured": {...}}                     # the benchmark's figures (per candidate, end to end)

``runtime.generate --recipe auto`` (or ``--recipe FILE``) runs it. A recipe holds on the CPU it
was chosen on: kernels differ with the vector extensions (int8 without VNNI, bf16 without
AVX-512 BF16 / AMX), so on another CPU :func:`recipe_engines` says so and falls back to the
default engines (re-measure there with ``python -m benchmarks.recipe``).

No torch here: the runtime reads recipes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from contract.atomic import write_json_atomic
from contract.bundle import MANIFEST
from contract.environment import cpu_model, vector_extensions
from contract.errors import BundleError
from engines.factory import Choice

log = logging.getLogger(__name__)

RECIPE = "recipe.json"  # beside the bundle's manifest.json
FORMAT = 1


def this_cpu() -> dict:
    """What a recipe is tied to: the CPU's model name and the vector extensions the kernels use."""
    return {"model": cpu_model(), "flags": vector_extensions()}


def recipe_path(bundle_root: str | os.PathLike) -> Path:
    return Path(bundle_root) / RECIPE


def write_recipe(bundle_root: str | os.PathLike, engines: Mapping[str, object], measured: Mapping | None = None) -> Path:
    """Write ``{network: Choice}`` with this CPU and ``measured`` to the bundle's ``recipe.json``, atomically."""
    if not (Path(bundle_root) / MANIFEST).is_file():
        raise BundleError(f"{bundle_root} is not a bundle (no {MANIFEST}); pass the bundle directory")
    choices = {name: Choice.of(c) for name, c in engines.items()}
    doc = {
        "format": FORMAT,
        "cpu": this_cpu(),
        "engines": {n: {"backend": c.backend, "precision": c.precision, "threads": c.threads} for n, c in choices.items()},
        "measured": dict(measured or {}),
    }
    path = recipe_path(bundle_root)
    write_json_atomic(path, json.loads(json.dumps(doc, default=float)))
    return path


def read_recipe(path: str | os.PathLike) -> dict:
    """A recipe file's content, checked: ``format``, ``cpu`` and ``engines`` (each a valid :class:`Choice`)."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"recipe {path} does not exist; write one with `python -m benchmarks.recipe --bundle BUNDLE`")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"recipe {path} is not readable JSON ({exc}); write it again with python -m benchmarks.recipe") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("engines"), dict) \
            or not isinstance(doc.get("cpu"), dict):
        raise BundleError(f"recipe {path} is not a format-{FORMAT} recipe (format, cpu, engines); "
                          "write it again with python -m benchmarks.recipe")
    doc["engines"] = {name: Choice.of(c) for name, c in doc["engines"].items()}
    return doc


def recipe_engines(which: str, bundle_root: str | os.PathLike) -> dict[str, Choice] | None:
    """The engine choices of ``--recipe``: ``auto`` (the bundle's ``recipe.json``) or a file.

    ``None`` (with a warning saying why) where there is no recipe for ``auto``, or the recipe
    was chosen on another CPU: the caller then runs its default engines.
    """
    path = recipe_path(bundle_root) if which == "auto" else Path(which)
    if which == "auto" and not path.is_file():
        log.warning("bundle %s has no recipe (%s); running the default engines. Measure one on this CPU with "
                    "`python -m benchmarks.recipe --bundle %s`", bundle_root, RECIPE, bundle_root)
        return None
    doc = read_recipe(path)
    here = this_cpu()
    if doc["cpu"].get("model") != here["model"] or list(doc["cpu"].get("flags") or []) != here["flags"]:
        log.warning("recipe %s was chosen on another CPU (%s; %s), not this one (%s; %s); running the default engines. "
                    "Re-measure here with `python -m benchmarks.recipe --bundle %s`", path, doc["cpu"].get("model"),
                    " ".join(doc["cpu"].get("flags") or []) or "no flags", here["model"], " ".join(here["flags"]) or "no flags",
                    bundle_root)
        return None
    log.info("recipe %s (chosen on this CPU): %s", path, ", ".join(f"{n}={c}" for n, c in doc["engines"].items()))
    return doc["engines"]
