"""Write 16-bit PNGs (Pillow writes 16-bit greyscale only, not 16-bit colour), for the tests of
the RGB8 rule in runtime/preprocess.py that both runtimes follow."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type: grey, grey+alpha, RGB, RGBA


def write_png16(path: Path, samples: np.ndarray) -> Path:
    """``samples`` uint16 ``[H, W]`` or ``[H, W, C]`` (C = 2, 3, 4) as a 16-bit PNG (no filtering)."""
    samples = np.asarray(samples, dtype=np.uint16)
    height, width = samples.shape[:2]
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    rows = samples.reshape(height, width * channels).astype(">u2")  # PNG stores big-endian samples
    raw = b"".join(b"\0" + row.tobytes() for row in rows)  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, COLOUR_TYPES[channels], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path
