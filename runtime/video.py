"""Frames to files: mp4 (H.264, PyAV), gif and webp (Pillow), PNG directories and ``.npy`` arrays.

Every writer goes through a temporary name beside the target and renames on success, so an
error (or Ctrl-C) never leaves a half-written file under the requested name.
"""

from __future__ import annotations

import fractions
import os
import shutil
import tempfile
from pathlib import Path

import av
import numpy as np
import PIL.Image

from contract.atomic import atomic_path, usual_permissions
from runtime.errors import InputError

FILE_FORMATS = (".mp4", ".gif", ".webp", ".npy")


def output_kind(path: str | os.PathLike) -> str:
    """``"mp4" | "gif" | "webp" | "npy" | "dir"`` for an output path; :class:`InputError` otherwise.

    A directory is a path that exists as one, ends with a separator, or has no extension.
    """
    text = os.fspath(path)
    p = Path(text)
    if text.endswith(("/", os.sep)) or p.is_dir() or not p.suffix:
        if p.exists() and not p.is_dir():
            raise InputError(f"{p} exists and is not a directory; give a directory for PNG frames or a file ending in {', '.join(FILE_FORMATS)}")
        return "dir"
    suffix = p.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise InputError(
            f"cannot write video to {p}: unknown extension {p.suffix!r}; use one of {', '.join(FILE_FORMATS)} "
            "or a directory (one PNG per frame)"
        )
    return suffix[1:]


def check_writable(path: str | os.PathLike) -> None:
    """:class:`InputError` unless a file (or frame directory) can be created at ``path``.

    Probes, with a temporary file that is removed at once, the directory the writers create their
    temporary names in: the parent (or the nearest ancestor that exists, since the writers create
    the missing ones), and for an existing frame directory that directory too. Called before any
    work, so that a read-only place fails in a second, not after the whole clip was computed.
    """
    target = Path(path)
    places = [target] if target.is_dir() else []
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    places.append(parent)
    for place in places:
        if not place.is_dir():
            raise InputError(f"cannot write {target}: {place} is not a directory; choose another output path")
        try:
            with tempfile.NamedTemporaryFile(dir=place, prefix=f".{target.name}.", suffix=".probe"):
                pass
        except OSError as exc:
            raise InputError(f"cannot write {target}: {place} is not writable ({exc.strerror or exc}); "
                             "choose a writable output directory") from None


def to_uint8(video: np.ndarray) -> np.ndarray:
    """Decoder output ``[F, 3, H, W]`` in about [-1, 1] -> uint8 ``[F, H, W, 3]``.

    The same float32 arithmetic as diffusers' postprocessing (``x / 2 + 0.5``, clamp to [0, 1],
    ``* 255``, round half to even).
    """
    x = np.clip(np.asarray(video, dtype=np.float32) / 2 + 0.5, 0, 1)
    return np.round(x.transpose(0, 2, 3, 1) * 255).astype(np.uint8)


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: int = 7) -> Path:
    """Write uint8 ``frames [F, H, W, 3]`` to ``path`` (kind from :func:`output_kind`) at ``fps``."""
    kind = output_kind(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise InputError(f"frames must be uint8 [F, H, W, 3] with F >= 1; got {frames.dtype} {list(frames.shape)}")
    if fps <= 0:
        raise InputError(f"fps must be positive, got {fps}")
    path = Path(path)
    if kind == "dir":
        _write_png_dir(frames, path)
        return path
    writer = {"mp4": _write_mp4, "gif": _write_gif, "webp": _write_webp, "npy": _write_npy}[kind]
    with atomic_path(path) as tmp:
        writer(frames, tmp, fps)
    return path


def _write_mp4(frames: np.ndarray, tmp: Path, fps: int) -> None:
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise InputError(f"H.264 (yuv420p) needs an even width and height, got {width} x {height}; write .gif/.webp/.npy instead")
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"  # yuv420p: plays everywhere
        stream.options = {"crf": "18"}  # visually lossless
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder


def _pil_frames(frames: np.ndarray) -> list[PIL.Image.Image]:
    return [PIL.Image.fromarray(f) for f in frames]


def _write_gif(frames: np.ndarray, tmp: Path, fps: int) -> None:
    first, *rest = _pil_frames(frames)
    first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=round(1000 / fps), loop=0)


def _write_webp(frames: np.ndarray, tmp: Path, fps: int) -> None:
    first, *rest = _pil_frames(frames)
    first.save(tmp, format="WEBP", save_all=True, append_images=rest, duration=round(1000 / fps), loop=0, lossless=True)


def _write_npy(frames: np.ndarray, tmp: Path, fps: int) -> None:
    with open(tmp, "wb") as f:  # a handle: np.save would append ".npy" to a bare temp name
        np.save(f, frames)


def _write_png_dir(frames: np.ndarray, final: Path) -> None:
    """``final/frame_0000.png`` ...: written into a temporary sibling, then moved in.

    A new directory appears whole (one rename). Into an existing directory the frames move
    one atomic rename at a time, and stale ``frame_*.png`` from a longer earlier clip go.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        for i, frame in enumerate(frames):
            PIL.Image.fromarray(frame).save(tmp / f"frame_{i:04d}.png", format="PNG")
        if not final.exists():
            usual_permissions(tmp)  # mkdtemp made it 0700
            os.replace(tmp, final)
            return
        stale = set(final.glob("frame_*.png"))
        for f in sorted(tmp.iterdir()):
            os.replace(f, final / f.name)
            stale.discard(final / f.name)
        for f in stale:
            f.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
