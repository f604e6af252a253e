"""TensorRT optimization profiles derived from the network specs (no TensorRT needed)."""

from __future__ import annotations

import pytest

from contract.errors import ShapeError
from contract.specs import NETWORKS, ModelConfig, build_specs
from contract.trt_profiles import (
    ProfileRanges,
    default_ranges,
    network_profile,
    network_ranges,
    parse_range,
    polygraphy_profile,
    resolve_ranges,
    shape_in_profile,
)

SVD = ModelConfig()  # SVD img2vid: 14 frames at 576x1024, 8x VAE, 8x UNet downsampling


def _profiles(config, ranges):
    specs = build_specs(config)
    # TensorRT builds the four networks; the pre-processing graph runs in ONNX Runtime.
    return {name: network_profile(specs[name], config, ranges) for name in NETWORKS}


def test_svd_default_ranges():
    r = default_ranges(SVD)
    assert r.batch == (1, 1, 1)
    assert r.frames == (1, 14, 25)
    assert r.decode_chunk == (1, 14, 25)
    assert r.height == (256, 576, 1024)
    assert r.width == (256, 1024, 1024)
    assert r.cfg is False


def test_unet_profile_at_default_ranges():
    p = _profiles(SVD, default_ranges(SVD))["unet"]
    # sample [B, F, 8, H/8, W/8]; batch max doubled so that CFG always fits
    assert p["sample"] == {"min": [1, 1, 8, 32, 32], "opt": [1, 14, 8, 72, 128], "max": [2, 25, 8, 128, 128]}
    assert p["timestep"] == {"min": [1], "opt": [1], "max": [2]}
    assert p["encoder_hidden_states"] == {"min": [1, 1, 1024], "opt": [1, 1, 1024], "max": [2, 1, 1024]}
    assert p["added_time_ids"] == {"min": [1, 3], "opt": [1, 3], "max": [2, 3]}


def test_cfg_moves_unet_opt_to_doubled_batch():
    ranges = resolve_ranges(SVD, {"cfg": True})
    p = _profiles(SVD, ranges)
    assert p["unet"]["sample"]["opt"][0] == 2
    assert p["unet"]["sample"]["max"][0] == 2
    assert p["vae_encoder"]["image"]["opt"][0] == 1  # only the UNet sees the doubled batch
    unet = build_specs(ModelConfig())["unet"]
    assert network_ranges(unet, ProfileRanges(batch=(1, 2, 3), cfg=True))["batch"] == (1, 4, 6)


def test_other_networks_at_default_ranges():
    p = _profiles(SVD, default_ranges(SVD))
    clip = p["image_encoder"]["pixel_values"]  # fixed 224x224
    assert clip == {"min": [1, 3, 224, 224], "opt": [1, 3, 224, 224], "max": [1, 3, 224, 224]}
    assert p["vae_encoder"]["image"] == {"min": [1, 3, 256, 256], "opt": [1, 3, 576, 1024], "max": [1, 3, 1024, 1024]}
    # decoder: latent [chunk, 4, h, w]; the chunk follows decode_chunk, not frames
    assert p["vae_decoder"]["latent"] == {"min": [1, 4, 32, 32], "opt": [14, 4, 72, 128], "max": [25, 4, 128, 128]}


def test_decode_chunk_range_is_independent():
    ranges = resolve_ranges(SVD, {"frames": (14, 14, 14), "decode_chunk": (1, 7, 14)})
    p = _profiles(SVD, ranges)
    assert p["unet"]["sample"]["min"][1] == 14 and p["unet"]["sample"]["max"][1] == 14
    assert [p["vae_decoder"]["latent"][k][0] for k in ("min", "opt", "max")] == [1, 7, 14]


def test_decode_chunk_follows_frames_by_default():
    ranges = resolve_ranges(SVD, {"frames": (8, 14, 21)})
    assert ranges.decode_chunk == (1, 14, 21)


def test_tiny_model_defaults():
    tiny = ModelConfig(vae_scale_factor=8, unet_downsample=2, embed_dim=32, default_height=64, default_width=64)
    r = default_ranges(tiny)
    assert tiny.pixel_multiple == 16
    assert r.height == (32, 64, 64) and r.width == (32, 64, 64)
    p = _profiles(tiny, r)["unet"]["sample"]
    assert p == {"min": [1, 1, 8, 4, 4], "opt": [1, 14, 8, 8, 8], "max": [2, 25, 8, 8, 8]}


@pytest.mark.parametrize(
    "text, expected", [("1:14:25", (1, 14, 25)), ("14", (14, 14, 14)), (" 2:2:4 ", (2, 2, 4))]
)
def test_parse_range(text, expected):
    assert parse_range(text, "frames") == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("1:14", "MIN:OPT:MAX"),
        ("1:14:25:30", "MIN:OPT:MAX"),
        ("a:b:c", "integers"),
        ("25:14:1", "MIN <= OPT <= MAX"),
        ("1:30:25", "MIN <= OPT <= MAX"),
        ("0:1:2", "at least 1"),
    ],
)
def test_parse_range_rejects(text, message):
    with pytest.raises(ShapeError, match=message) as info:
        parse_range(text, "decode_chunk")
    assert "--decode-chunk" in str(info.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"height": (256, 500, 1024)}, "multiples of 64"),
        ({"width": (100, 1024, 1024)}, "multiples of 64"),
        ({"height": (32, 576, 1024)}, "multiples of 64"),
    ],
)
def test_sizes_must_suit_the_model(overrides, message):
    with pytest.raises(ShapeError, match=message) as info:
        resolve_ranges(SVD, overrides)
    assert "--height/--width" in str(info.value)


def test_polygraphy_profile_holds_the_same_shapes():
    p = _profiles(SVD, default_ranges(SVD))["unet"]
    profile = polygraphy_profile(p)
    assert list(profile) == ["sample", "timestep", "encoder_hidden_states", "added_time_ids"]
    assert profile["sample"].min == (1, 1, 8, 32, 32)
    assert profile["sample"].opt == (1, 14, 8, 72, 128)
    assert profile["sample"].max == (2, 25, 8, 128, 128)


def test_shape_in_profile():
    bounds = {"min": [1, 1, 8, 32, 32], "opt": [1, 14, 8, 72, 128], "max": [2, 25, 8, 128, 128]}
    assert shape_in_profile((1, 14, 8, 72, 128), bounds)
    assert shape_in_profile((2, 25, 8, 128, 128), bounds)
    assert not shape_in_profile((1, 26, 8, 72, 128), bounds)
    assert not shape_in_profile((3, 14, 8, 72, 128), bounds)
    assert not shape_in_profile((1, 14, 8, 72), bounds)


def test_profile_policy_comes_from_each_spec():
    """Each network's spec says which range each of its symbols follows; the decoders (the SVD
    one and the fast one) take the decode chunk, not the video's frame count."""
    specs = build_specs(ModelConfig())
    ranges = ProfileRanges(frames=(1, 14, 25), decode_chunk=(1, 4, 8))
    for name in ("vae_decoder", "vae_decoder_fast"):
        assert network_ranges(specs[name], ranges)["frames"] == (1, 4, 8)
    assert network_ranges(specs["unet"], ranges)["frames"] == (1, 14, 25)
    for spec in specs.values():
        used = {d for t in spec.inputs for d in t.shape if isinstance(d, str)} - {"latent_height", "latent_width"}
        if spec.name != "clip_preprocess":  # runs on ONNX Runtime: no TensorRT profile
            assert used <= {symbol for symbol, _ in spec.profile_symbols}, spec.name
