"""TAESDV (madebyollin/taesdv) as the bundle's ``vae_decoder_fast``, on random weights in the public
checkpoint's exact layout (``tests/reference_taesdv.py``): strict loading, export through both
command lines, ``--decoder fast`` through the runtime, and every result against a transcription of
the public ``decode_video`` that shares no code with ``networks/taesdv.py``.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from reference_taesdv import checkpoint_shapes, decode_video, decode_video_sequential, random_checkpoint, to_uint8

FRAME_COUNTS = (14, 9)  # SVD's frame count, and another one >= 8 (the memory reaches 10 frames back)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """``taesdv.pth`` (seed 0, torch.save of a plain state dict, as published) and the same layout
    with other values as ``.safetensors`` (seed 1)."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("taesdv")
    states = {"pth": random_checkpoint(0), "safetensors": random_checkpoint(1)}
    torch.save(states["pth"], root / "taesdv.pth")
    save_file(states["safetensors"], str(root / "taesdv.safetensors"))
    return {kind: (root / f"taesdv.{kind}", state) for kind, state in states.items()}


@pytest.fixture(scope="module")
def taesdv_bundle(tiny_bundle, tiny_model_dir, checkpoints, tmp_path_factory):
    """The tiny bundle plus TAESDV, added by ``python -m export.onnx --networks vae_decoder_fast
    --fast-decoder taesdv.pth`` (the other networks keep their entries)."""
    from export.onnx import main

    out = tmp_path_factory.mktemp("taesdv-bundle") / "bundle"
    shutil.copytree(tiny_bundle, out)
    rc = main(["--model", str(tiny_model_dir), "--networks", "vae_decoder_fast", "--fast-decoder",
               str(checkpoints["pth"][0]), "--out", str(out), "--quiet"])
    assert rc == 0
    return out


def _public_frames(state: dict, latents: np.ndarray) -> torch.Tensor:
    """The public decoder on diffusion-space ``latents [T, 4, h, w]``: ``[T, 3, 8h, 8w]`` in ~[0, 1]."""
    with torch.no_grad():
        return decode_video(state, torch.from_numpy(np.ascontiguousarray(latents))[None])[0]


def test_architecture_has_the_public_keys_and_shapes():
    from networks.taesdv import TAESDV

    ours = {k: tuple(v.shape) for k, v in TAESDV().state_dict().items()}
    assert ours == checkpoint_shapes()
    assert len(ours) == 134


@pytest.mark.parametrize("frames", FRAME_COUNTS)
def test_decoder_is_the_public_forward(checkpoints, frames):
    """Same frame count out as in, no delay: the library's decoder equals the public parallel and
    sequential ``decode_video`` (which agree with each other)."""
    from networks.fast_decoder import load_taesdv

    path, state = checkpoints["pth"]
    z = torch.randn(frames, 4, 4, 6, generator=torch.Generator().manual_seed(frames)) * 1.5
    with torch.no_grad():
        want = decode_video(state, z[None])[0]
        got = load_taesdv(path).decoder(z)
        sequential = decode_video_sequential(state, z[None])[0]
    assert got.shape == (frames, 3, 32, 48)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(sequential, want, atol=1e-5, rtol=0)


def test_export_records_which_decoder(taesdv_bundle, tiny_bundle, checkpoints):
    from contract.bundle import Bundle

    bundle, before = Bundle.load(taesdv_bundle), Bundle.load(tiny_bundle)
    entry = bundle.entry("vae_decoder_fast")
    assert entry["kind"] == "taesdv" and entry["source"] == str(checkpoints["pth"][0].resolve())
    assert entry["inputs"] == bundle.entry("vae_decoder")["inputs"] and entry["outputs"] == bundle.entry("vae_decoder")["outputs"]
    decoder_params = sum(int(np.prod(s)) for k, s in checkpoint_shapes().items() if k.startswith("decoder."))
    assert entry["parameters"] == decoder_params == 1_591_171  # the decoder alone; the encoder is not exported
    assert all(r["passed"] for r in bundle.variant("vae_decoder_fast")["validation"])
    for name in before.networks:  # the other networks were kept as they were
        assert bundle.entry(name) == before.entry(name)


@pytest.mark.parametrize("frames", FRAME_COUNTS)
def test_graph_matches_the_public_decoder(taesdv_bundle, checkpoints, frames):
    """The graph takes the contract's input (latents / scaling_factor) and returns [-1, 1]: it must
    equal ``2 * decode_video(latents) - 1`` of the public decoder on the diffusion-space latents."""
    from contract.bundle import Bundle
    from export.validate import ort_session

    bundle = Bundle.load(taesdv_bundle)
    z = np.random.default_rng(frames).standard_normal((frames, 4, 4, 6)).astype(np.float32) * 1.5
    contract_input = z / np.float32(bundle.config.scaling_factor)
    (got,) = ort_session(bundle.path("vae_decoder_fast")).run(["sample"], {"latent": contract_input})
    want = 2 * _public_frames(checkpoints["pth"][1], z).numpy() - 1
    assert got.shape == (frames, 3, 32, 48)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    import PIL.Image

    path = tmp_path_factory.mktemp("img") / "in.png"
    PIL.Image.fromarray((np.random.RandomState(3).rand(40, 56, 3) * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("frames", FRAME_COUNTS)
def test_generate_with_taesdv_matches_the_public_decoder(taesdv_bundle, checkpoints, image_path, tmp_path, frames):
    """``--decoder fast`` on the CLI: its frames are the public decoder's frames of the pipeline's
    latents (as the public script writes them, within one level); the torch backend agrees."""
    from runtime.generate import main
    from runtime.pipeline import VideoPipeline

    out = tmp_path / "clip.npy"
    assert main(["--bundle", str(taesdv_bundle), "--image", str(image_path), "--out", str(out), "--frames", str(frames),
                 "--steps", "1", "--max-guidance", "1", "--height", "32", "--width", "48", "--decoder", "fast",
                 "--threads", "1", "--quiet"]) == 0
    frames_cli = np.load(out)
    opts = dict(num_frames=frames, steps=1, max_guidance=1.0, height=32, width=48, progress=False)
    with VideoPipeline.from_bundle(taesdv_bundle, threads=1) as pipe:
        result = pipe(str(image_path), decoder="fast", **opts)
    assert np.array_equal(result.frames, frames_cli) and frames_cli.shape == (frames, 32, 48, 3)
    want = to_uint8(_public_frames(checkpoints["pth"][1], result.latents[0])).numpy()
    diff = np.abs(want.astype(int) - frames_cli.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    assert 0.05 < (frames_cli == 255).mean() + (frames_cli == 0).mean() < 0.6  # random weights: not all clipped
    torch_frames = VideoPipeline.from_bundle(taesdv_bundle, backend="torch")(str(image_path), decoder="fast", **opts).frames
    assert np.abs(torch_frames.astype(int) - frames_cli.astype(int)).max() <= 1


def test_add_to_an_existing_bundle(taesdv_bundle, checkpoints, tmp_path):
    """``python -m export.fast_decoder`` replaces the bundle's fast decoder with a .safetensors TAESDV,
    without the model; the full decoder's entry stays."""
    from contract.bundle import Bundle
    from export.fast_decoder import main
    from export.validate import ort_session

    out = tmp_path / "bundle"
    shutil.copytree(taesdv_bundle, out)
    path, state = checkpoints["safetensors"]
    assert main(["--bundle", str(out), "--fast-decoder", str(path), "--quiet"]) == 0
    bundle, before = Bundle.load(out), Bundle.load(taesdv_bundle)
    entry = bundle.entry("vae_decoder_fast")
    assert entry["kind"] == "taesdv" and entry["source"] == str(path.resolve())
    assert entry["variants"]["fp32"]["sha256"] != before.entry("vae_decoder_fast")["variants"]["fp32"]["sha256"]
    assert bundle.entry("vae_decoder") == before.entry("vae_decoder")
    bundle.verify("vae_decoder_fast")
    z = np.random.default_rng(5).standard_normal((14, 4, 4, 4)).astype(np.float32)
    (got,) = ort_session(bundle.path("vae_decoder_fast")).run(["sample"], {"latent": z / np.float32(bundle.config.scaling_factor)})
    np.testing.assert_allclose(got, 2 * _public_frames(state, z).numpy() - 1, atol=1e-4, rtol=0)


def _broken(tmp_path, change, suffix=".pth") -> str:
    state = random_checkpoint(0)
    change(state)
    path = tmp_path / f"broken{suffix}"
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("decoder.18.conv.0.weight"), "1 missing key(s): decoder.18.conv.0.weight"),
        (lambda s: s.update({"decoder.20.weight": torch.zeros(3)}), "1 unexpected key(s): decoder.20.weight"),
        (lambda s: s.update({"decoder.1.weight": torch.zeros(64, 4, 1, 1)}), "decoder.1.weight has shape (64, 4, 1, 1), expected (64, 4, 3, 3)"),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_bad_checkpoint_is_a_clear_error(tmp_path, capsys, change, message):
    from export.onnx import main

    out = tmp_path / "out"
    rc = main(["--model", "tiny", "--fast-decoder", _broken(tmp_path, change), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert message in err and "is not a TAESDV checkpoint" in err
    assert not out.exists()  # failed before any work; the new directory is removed


def test_unreadable_checkpoints_are_clear_errors(taesdv_bundle, tmp_path, capsys):
    from contract.bundle import Bundle
    from export.fast_decoder import main

    before = Bundle.load(taesdv_bundle).manifest

    pickled_module = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), pickled_module)  # a pickled object: weights_only refuses it
    not_a_state_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_state_dict)
    other_file = tmp_path / "taesdv.bin"
    other_file.write_bytes(b"x")
    for path, message in [(pickled_module, "could not read the TAESDV checkpoint"), (not_a_state_dict, "not a state dict"),
                          (other_file, "a file must be a TAESDV checkpoint ending in .pth or .safetensors"),
                          (tmp_path / "absent.pth", "does not exist")]:
        assert main(["--bundle", str(taesdv_bundle), "--fast-decoder", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, err
    assert Bundle.load(taesdv_bundle).manifest == before


def test_benchmark_row(checkpoints, tmp_path, monkeypatch):
    """``benchmarks.decoder --taesdv``: TAESDV's row (parameters, FLOPs, time) beside a distilled decoder's."""
    from benchmarks import decoder as bench
    from networks.fast_decoder import FastDecoder, FastDecoderConfig, save_fast_decoder

    # SVD's decoder FLOPs need its 64 M-parameter VAE built; its count is in docs/decoder.md.
    monkeypatch.setattr(bench, "svd_decoder_flops", lambda: (63_579_183, 94_766e9))
    small = save_fast_decoder(FastDecoder(FastDecoderConfig(channels=(8, 8, 8, 8), blocks=(1, 1, 1, 1))), tmp_path / "small")
    result = bench.run([str(small)], None, None, [32], 3, 1, 1, taesdv=str(checkpoints["pth"][0]))
    row = result["decoders"]["taesdv"]
    assert row["parameters"] == 1_591_171 and round(row["gflop"]) == 5661 and row["seconds"]["32"]["median"] > 0
    assert list(row["vs_distilled"]) == ["fast:small"] and row["vs_distilled"]["fast:small"]["32"] > 0
    text = bench.format_markdown(result)
    assert "| taesdv | 1,591,171 | 5661 | 17x | " in text and "TAESDV vs fast:small, same rounds" in text
