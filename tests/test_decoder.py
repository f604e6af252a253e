"""The fast temporal decoder: architecture, files, distillation from a trained tiny VAE, export.

One module-scoped run does the expensive part once: a few VAE steps on synthetic clips (so the
teacher reconstructs something), then a short distillation at 32x32 px. Deterministic (seeded,
one thread).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from networks.fast_decoder import FastDecoder, FastDecoderConfig, FastDecoderError, load_fast_decoder, save_fast_decoder

SMALL = FastDecoderConfig(channels=(16, 16, 8, 8), blocks=(1, 1, 1, 1))


def _decoder(temporal: str, seed: int = 0) -> FastDecoder:
    torch.manual_seed(seed)
    return FastDecoder(FastDecoderConfig(channels=SMALL.channels, blocks=SMALL.blocks, temporal=temporal)).eval()


@pytest.mark.parametrize("frames", [1, 3, 14])
def test_shapes_any_frame_count(frames):
    z = torch.randn(frames, 4, 5, 7)
    with torch.no_grad():
        out = _decoder("memory")(z)
    assert out.shape == (frames, 3, 40, 56)


@pytest.mark.parametrize("temporal, past, future", [("memory", True, False), ("tconv", True, True), ("none", False, False)])
def test_temporal_link_reaches_the_right_frames(temporal, past, future):
    """Changing frame 2 changes later frames through a backward link, earlier ones through a forward
    link (each stage's link adds a frame of reach: 4 stages reach frames 0 and 4)."""
    dec = _decoder(temporal)
    z = torch.randn(5, 4, 4, 4)
    z2 = z.clone()
    z2[2] += 1.0
    with torch.no_grad():
        a, b = dec(z), dec(z2)
    changed = [(a[i] - b[i]).abs().max().item() > 1e-6 for i in range(5)]
    assert changed[2]
    assert changed[3] is changed[4] is past
    assert changed[1] is changed[0] is future


def test_clips_in_one_batch_stay_independent():
    """A training batch of clips back to back (``frames=``) decodes each clip as if alone."""
    dec = _decoder("tconv")
    clips = torch.randn(2, 3, 4, 4, 4)
    with torch.no_grad():
        together = dec(clips.flatten(0, 1), frames=3).unflatten(0, (2, 3))
        alone = torch.stack([dec(c) for c in clips])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)


def test_save_load_roundtrip(tmp_path):
    dec = _decoder("memory")
    dec.set_latent_stats(torch.randn(6, 4, 4, 4) * 3 + 1)
    save_fast_decoder(dec, tmp_path / "run" / "decoder")
    assert json.loads((tmp_path / "run" / "decoder" / "config.json").read_text())["temporal"] == "memory"
    loaded = load_fast_decoder(tmp_path / "run")  # a run directory holding decoder/ is accepted
    z = torch.randn(3, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), dec(z), atol=0, rtol=0)


def test_bad_directory_and_config_errors(tmp_path):
    with pytest.raises(FastDecoderError, match="training.decoder"):
        load_fast_decoder(tmp_path / "missing")
    (tmp_path / "x").mkdir()
    with pytest.raises(FastDecoderError, match="config.json"):
        load_fast_decoder(tmp_path / "x")
    with pytest.raises(FastDecoderError, match="temporal link"):
        FastDecoderConfig(temporal="lstm")


def test_metrics_and_baseline():
    from training.decoder import LinearBaseline, psnr, ssim, temporal_error

    x = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    assert psnr(x, x) > 100  # mse floored at 1e-10
    assert ssim(x, x) == pytest.approx(1.0)
    assert psnr(x, x + 0.1) == pytest.approx(10 * np.log10(4 / 0.01), abs=0.5)
    still = x[:, :1].expand_as(x)
    assert temporal_error(x, x) == 0.0 and temporal_error(still, x) > 0
    # The baseline recovers an exact linear map from latents to block colours.
    z = torch.randn(5, 4, 3, 3)
    w, b = torch.randn(3, 4), torch.randn(3)
    frames = torch.nn.functional.interpolate(torch.einsum("oc,nchw->nohw", w, z) + b[:, None, None], scale_factor=8.0, mode="nearest")
    fit = LinearBaseline.fit(z, frames, 8)
    torch.testing.assert_close(fit(z), frames, atol=1e-4, rtol=0)


def test_ssim_loss_is_the_held_out_metric():
    """The training term computes scikit-image's SSIM (the reported figure), and it has gradients."""
    from training.decoder import DistillationLoss, ssim, ssim_torch

    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 2, 3, 40, 36, generator=g, dtype=torch.float64) * 2 - 1
    b = (a + 0.3 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(-1, 1)
    assert float(ssim_torch(a.flatten(0, 1), b.flatten(0, 1))) == pytest.approx(ssim(a, b), abs=1e-9)
    student = b.float().requires_grad_(True)
    terms = DistillationLoss(ssim_weight=1.0)(student, a.float(), a.float())
    assert float(terms["ssim"].detach()) == pytest.approx(1 - ssim(a, b), abs=1e-5)
    terms["loss"].backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0
    assert "ssim" not in DistillationLoss()(student, a.float(), a.float())  # off by default


def test_config_errors():
    from training.decoder import ConfigError, DecoderConfig, main

    with pytest.raises(ConfigError, match="--crop 8: must be 0 or at least 11"):
        DecoderConfig(crop=8, ssim_weight=0.5).validate(scale=8)

    with pytest.raises(ConfigError, match="--blocks"):
        DecoderConfig(blocks="1,1").validate()
    with pytest.raises(ConfigError, match="--channels"):
        DecoderConfig(channels="64,64").validate(scale=8)
    assert main(["--temporal", "lstm", "--out", "/nonexistent/x"]) == 2


# --------------------------------------------------------------------------- a real (short) run


@pytest.fixture(scope="module")
def distilled(tiny_model_dir, tmp_path_factory):
    """A tiny VAE trained a few steps, then a fast decoder distilled from it."""
    from networks.models import load_model
    from training.decoder import DecoderConfig, train_decoder
    from training.vae import VAEConfig, train_vae

    root = tmp_path_factory.mktemp("decoder")
    common = dict(data="synthetic", frames=3, height=32, width=32, num_clips=24, holdout=0.25, seed=0)
    vae_cfg = VAEConfig(model=str(tiny_model_dir), out=str(root / "vae"), crop=0, batch_size=2, max_steps=30, lr=2e-3, log_every=100, **common)
    vae_row = train_vae(vae_cfg, model=load_model(tiny_model_dir), progress=False)
    dec_cfg = DecoderConfig(model=str(root / "vae" / "model"), out=str(root / "decoder"), crop=0, channels="32,32,16,16",
                            blocks="1,1,1,1", batch_size=4, max_steps=200, lr=5e-3, log_every=50, **common)
    result = train_decoder(dec_cfg, progress=False)
    return root, vae_row, dec_cfg, result


def test_vae_step_writes_a_loadable_model(distilled, tiny_model_dir):
    from networks.models import load_model

    root, vae_row, _, _ = distilled
    model = load_model(root / "vae" / "model")
    original = load_model(tiny_model_dir)
    changed = any(not torch.equal(a, b) for a, b in zip(model.vae.state_dict().values(), original.vae.state_dict().values()))
    assert changed and "held_out_psnr" in vae_row
    for name, p in model.unet.state_dict().items():  # the other components are the source's
        assert torch.equal(p, original.unet.state_dict()[name])


def test_student_beats_the_linear_baseline(distilled):
    root, _, _, result = distilled
    assert result["student"]["psnr"] > result["baseline"]["psnr"] + 0.3, result
    saved = json.loads((root / "decoder" / "eval.json").read_text())
    assert saved["student"] == result["student"] and saved["steps"] == 200
    assert (root / "decoder" / "checkpoints" / "latest").is_file()


def test_resume_continues_from_the_checkpoint(distilled):
    from dataclasses import replace

    from training.decoder import train_decoder

    root, _, cfg, _ = distilled
    more = replace(cfg, max_steps=205, resume=True, out=str(root / "decoder"))
    result = train_decoder(more, progress=False)
    assert result["steps"] == 205
    rows = [json.loads(line) for line in (root / "decoder" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 205


@pytest.fixture(scope="module")
def fast_bundle(distilled, tmp_path_factory):
    """Every network of the trained-VAE model plus vae_decoder_fast, exported and validated."""
    from export.onnx import export_bundle

    root = distilled[0]
    out = tmp_path_factory.mktemp("fast-bundle")
    export_bundle(root / "vae" / "model", out, fast_decoder=root / "decoder", progress=False)
    return out


@pytest.mark.parametrize("frames", [8, 14])  # the model's frame count (14) and another >= 8
def test_export_into_a_bundle_matches_pytorch(fast_bundle, distilled, frames):
    from contract.bundle import Bundle
    from export.validate import ort_session

    bundle = Bundle.load(fast_bundle)
    assert bundle.networks[-2:] == ["vae_decoder", "vae_decoder_fast"]
    entry = bundle.entry("vae_decoder_fast")
    assert entry["inputs"] == bundle.entry("vae_decoder")["inputs"] and entry["outputs"] == bundle.entry("vae_decoder")["outputs"]
    validation = bundle.variant("vae_decoder_fast")["validation"]
    assert all(r["passed"] for r in validation) and len(validation) >= 2
    decoder = load_fast_decoder(entry["source"])
    z = torch.randn(frames, 4, 4, 6, generator=torch.Generator().manual_seed(frames))
    (got,) = ort_session(bundle.path("vae_decoder_fast")).run(["sample"], {"latent": z.numpy()})
    with torch.no_grad():
        want = decoder(z).numpy()
    assert got.shape == (frames, 3, 32, 48)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    import PIL.Image

    path = tmp_path_factory.mktemp("img") / "in.png"
    PIL.Image.fromarray((np.random.RandomState(1).rand(40, 56, 3) * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("frames", [8, 14])
def test_generate_with_the_fast_decoder(fast_bundle, image_path, tmp_path, frames):
    """--decoder fast: same latents as full, frames from vae_decoder_fast; torch and ONNX Runtime agree
    at the model's frame count (14) and another >= 8."""
    from runtime.generate import main
    from runtime.pipeline import VideoPipeline

    out = tmp_path / "clip.npy"
    common = ["--bundle", str(fast_bundle), "--image", str(image_path), "--frames", str(frames), "--steps", "1",
              "--max-guidance", "1", "--height", "32", "--width", "48", "--threads", "1", "--quiet"]
    assert main([*common, "--out", str(out), "--decoder", "fast"]) == 0
    clip = np.load(out)
    assert clip.shape == (frames, 32, 48, 3) and clip.dtype == np.uint8
    opts = dict(num_frames=frames, steps=1, max_guidance=1.0, height=32, width=48, progress=False)
    with VideoPipeline.from_bundle(fast_bundle, threads=1) as pipe:
        full = pipe(str(image_path), decoder="full", **opts)
        fast = pipe(str(image_path), decoder="fast", **opts)
    assert np.array_equal(fast.frames, clip)
    assert np.array_equal(full.latents, fast.latents) and not np.array_equal(full.frames, fast.frames)
    ref = VideoPipeline.from_bundle(fast_bundle, backend="torch")(str(image_path), decoder="fast", **opts)
    assert np.abs(ref.frames.astype(int) - clip.astype(int)).max() <= 1


def test_fast_decoder_missing_from_the_bundle(tiny_bundle, image_path, tmp_path, capsys):
    from runtime.generate import main

    out = tmp_path / "clip.npy"
    rc = main(["--bundle", str(tiny_bundle), "--image", str(image_path), "--out", str(out), "--frames", "2", "--steps", "1",
               "--decoder", "fast", "--threads", "1", "--quiet"])
    assert rc == 2 and not out.exists()
    assert "--fast-decoder" in capsys.readouterr().err


def test_export_refuses_fast_decoder_without_a_directory():
    from export.onnx import UnknownNetworkError, _check_networks, main

    assert main(["--networks", "vae_decoder_fast", "--out", "/tmp/unused"]) == 2
    with pytest.raises(UnknownNetworkError, match="--fast-decoder"):
        _check_networks(["vae_decoder_fast"])
    assert _check_networks(["unet"], fast_decoder=True) == ["unet", "vae_decoder_fast"]
