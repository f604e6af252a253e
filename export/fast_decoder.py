"""``python -m export.fast_decoder``: add a fast decoder to an existing bundle as ``vae_decoder_fast``.

A fast decoder needs nothing of the model but the values in the bundle's manifest (latent
channels, VAE scale factor, ``scaling_factor``), so the model is not loaded: the graph is traced,
cleaned and validated against PyTorch by the exporter's own chain (:func:`export.onnx.export_network`)
in a staging folder inside the bundle, moved into place, and the manifest is rewritten last,
atomically. An existing ``vae_decoder_fast`` is replaced (with its precision variants and any
TensorRT plan built from it, which no longer match).

    python -m export.fast_decoder --bundle bundle --fast-decoder taesdv.pth      # TAESDV's checkpoint
    python -m export.fast_decoder --bundle bundle --fast-decoder runs/decoder    # a distilled decoder
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from contract.bundle import Bundle
from contract.cli import quiet_logging, run_cli
from contract.specs import build_specs
from export.onnx import ALL_NETWORKS, DEFAULT_OPSET, _install, _staging_dir, default_dims, export_network, fast_decoder_for
from networks.fast_decoder import open_fast_decoder

log = logging.getLogger(__name__)

NAME = "vae_decoder_fast"


def add_fast_decoder(bundle: Bundle | str | os.PathLike, fast_decoder: str | os.PathLike, validate: bool = True,
                     say=log.info) -> dict:
    """Export ``fast_decoder`` (a distilled decoder's directory or a TAESDV ``.pth`` / ``.safetensors``)
    into ``bundle`` as ``vae_decoder_fast``; return its manifest entry.

    Traced at the bundle's own sample dims and validated at 8, 14 and 25 frames (default dims of a
    small model: a decoder's cost does not depend on the teacher's size).
    """
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    found = open_fast_decoder(fast_decoder)
    config = bundle.config
    net, fields = fast_decoder_for(found, config)
    export_dims, check_list = default_dims(config, full_size=False)
    export_dims = {**export_dims, **bundle.manifest.get("export", {}).get("sample_dims", {})}
    check_list = [{**export_dims, **d} for d in check_list] if validate else []
    opset = int(bundle.manifest.get("export", {}).get("opset", DEFAULT_OPSET))
    old = bundle.manifest["networks"].get(NAME, {})
    with _staging_dir(bundle.root) as stage:
        entry, files = export_network(NAME, None, build_specs(config)[NAME], config, stage, export_dims, check_list,
                                      opset=opset, say=say, net=net)
        entry.update(fields)
        _install(files, {NAME: entry}, bundle.root)
    networks = {**bundle.manifest["networks"], NAME: entry}
    bundle.manifest["networks"] = {n: networks[n] for n in ALL_NETWORKS if n in networks}
    engines = bundle.manifest.get("engines", {})
    bundle.manifest["engines"] = {k: v for k, v in engines.items()
                                  if k != NAME and not (isinstance(v, dict) and v.get("network") == NAME)}
    bundle.save()  # last, atomically
    # Graph variants of the replaced decoder are no longer in the manifest: remove their files.
    for variant in old.get("variants", {}).values():
        for name in (variant.get("file"), variant.get("external_data")):
            if name and name not in (entry["variants"]["fp32"]["file"], entry["variants"]["fp32"]["external_data"]):
                (bundle.root / name).unlink(missing_ok=True)
    say(f"{NAME}: {fields['kind']} decoder from {fields['source']} added to {bundle.root}")
    return entry


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.fast_decoder",
        description="Add a fast decoder to an existing bundle as vae_decoder_fast (validated against PyTorch), without "
                    "loading the model: TAESDV's public checkpoint or a decoder distilled by training.decoder. "
                    "Run clips with it: python -m runtime.generate --bundle B ... --decoder fast",
        epilog="examples:\n"
               "  python -m export.fast_decoder --bundle bundle --fast-decoder taesdv.pth\n"
               "  python -m export.fast_decoder --bundle bundle --fast-decoder runs/decoder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bundle", required=True, metavar="DIR", help="bundle directory (from python -m export.onnx)")
    p.add_argument("--fast-decoder", required=True, metavar="DIR|FILE",
                   help="TAESDV's checkpoint (a file ending in .pth or .safetensors; docs/models-taesdv.md) or a "
                        "distilled decoder (the OUT directory of python -m training.decoder)")
    p.add_argument("--no-validate", action="store_true", help="skip the ONNX Runtime vs PyTorch check (not recommended)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with quiet_logging(args.quiet):
        add_fast_decoder(Path(args.bundle), args.fast_decoder, validate=not args.no_validate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
