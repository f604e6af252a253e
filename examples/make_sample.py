"""Draw ``examples/sample.png``: a 256x256 landscape (sky, sun, hills, a lake) made from numbers alone.

    python examples/make_sample.py

The image ships with the project so that every command in the README has an input; it is drawn
here rather than downloaded so that its licence is the project's own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image


def sample_image(size: int = 256) -> np.ndarray:
    """uint8 ``[size, size, 3]``."""
    y, x = np.mgrid[0:size, 0:size] / size
    sky = np.stack([0.35 + 0.4 * y, 0.55 + 0.35 * y, 0.95 - 0.2 * y], -1)
    img = sky.copy()
    sun = (x - 0.72) ** 2 + (y - 0.25) ** 2 < 0.09**2
    img[sun] = [1.0, 0.85, 0.35]
    far = y > 0.55 + 0.06 * np.sin(7 * x + 1.0)
    img[far] = np.stack([0.25 + 0.1 * x, 0.45 + 0.1 * y, 0.3 + 0 * x], -1)[far]
    near = y > 0.68 + 0.05 * np.sin(11 * x)
    img[near] = np.stack([0.15 + 0.05 * x, 0.35 + 0.2 * (y - 0.68), 0.12 + 0 * x], -1)[near]
    lake = (y > 0.82) & (np.abs(x - 0.35) < 0.25 - 0.8 * (y - 0.82))
    img[lake] = np.stack([0.2 + 0.05 * np.sin(60 * y), 0.4 + 0 * x, 0.7 + 0.05 * np.sin(60 * y)], -1)[lake]
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


if __name__ == "__main__":
    out = Path(__file__).with_name("sample.png")
    PIL.Image.fromarray(sample_image()).save(out, optimize=True)
    print(f"wrote {out}")
