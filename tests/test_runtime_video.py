"""Video files: written atomically, decoded back with the frame count, size and (lossless) values."""

from __future__ import annotations

import av
import numpy as np
import PIL.Image
import pytest
import torch

from runtime.errors import InputError
from runtime.video import output_kind, to_uint8, write_video


@pytest.fixture(scope="module")
def frames():
    """A moving gradient, uint8 [5, 48, 64, 3] (smooth, so H.264 keeps it close)."""
    y, x = np.mgrid[0:48, 0:64]
    return np.stack([np.stack([(x * 4 + 10 * t) % 256, y * 5, np.full_like(x, 40 * t)], -1) for t in range(5)]).astype(np.uint8)


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_mp4_decodes_back(tmp_path, frames):
    path = write_video(frames, tmp_path / "clip.mp4", fps=7)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == 7
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).mean() < 4
    assert not _leftovers(tmp_path)
    assert path.stat().st_mode & 0o044  # readable by others, as an ordinary file


@pytest.mark.parametrize("suffix, fps, ms", [(".gif", 10, 100), (".webp", 8, 125), (".webp", 25, 40)])
def test_animated_images(tmp_path, frames, suffix, fps, ms):
    """Every frame lasts 1000 / fps ms (GIF stores hundredths of a second: 10 fps keeps it exact)."""
    path = write_video(frames, tmp_path / f"clip{suffix}", fps=fps)
    with PIL.Image.open(path) as im:
        assert im.n_frames == len(frames) and im.size == (64, 48)
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            im.load()  # WebP sets a frame's duration when it decodes it
            durations.append(im.info["duration"])
            if suffix == ".webp":  # written lossless
                assert np.array_equal(np.asarray(im.convert("RGB")), frames[i])
    assert durations == [ms] * len(frames)


def test_npy_and_png_directory_are_exact(tmp_path, frames):
    assert np.array_equal(np.load(write_video(frames, tmp_path / "clip.npy")), frames)
    out = write_video(frames, tmp_path / "frames")
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"frame_{i:04d}.png" for i in range(5)]
    assert np.array_equal(np.asarray(PIL.Image.open(out / "frame_0003.png")), frames[3])
    # Rewriting a shorter clip into the same directory leaves no stale frames.
    write_video(frames[:2], str(out) + "/")
    assert sorted(p.name for p in out.iterdir()) == ["frame_0000.png", "frame_0001.png"]
    assert not _leftovers(tmp_path)


def test_failed_write_leaves_nothing(tmp_path, frames):
    with pytest.raises(InputError, match="even"):
        write_video(frames[:, :47], tmp_path / "odd.mp4")
    assert list(tmp_path.iterdir()) == []


def test_output_kind_errors(tmp_path):
    assert output_kind(tmp_path / "a.MP4") == "mp4"
    assert output_kind(tmp_path / "newdir") == "dir"
    with pytest.raises(InputError, match="unknown extension"):
        output_kind(tmp_path / "clip.avi")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        output_kind(tmp_path / "file")
    with pytest.raises(InputError, match="uint8"):
        write_video(np.zeros((2, 8, 8, 3), np.float32), tmp_path / "x.npy")


def test_to_uint8_matches_diffusers_postprocess():
    from diffusers.video_processor import VideoProcessor

    video = torch.randn(3, 3, 8, 16, generator=torch.Generator().manual_seed(0)) * 0.8  # [F, 3, H, W]
    ref = VideoProcessor().postprocess_video(video.permute(1, 0, 2, 3)[None], output_type="np")[0]
    ours = to_uint8(video)
    assert ours.dtype == np.uint8 and ours.shape == (3, 8, 16, 3)
    assert np.array_equal(ours, (ref * 255).round().astype(np.uint8))
