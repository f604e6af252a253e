"""SF-V training: samplers, losses, preconditioning vs diffusers, discriminator, loop, checkpoints."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from training.discriminator import DiscriminatorHeads, UNetEncoder, discriminate
from training.frechet import frechet_distance, frechet_distance_features
from training.losses import GeneratorLoss, HingeDiscriminatorLoss, PseudoHuberLoss, R1Penalty
from training.noise import DiscriminatorSigmas, GeneratorSigmas, karras_sigmas
from runtime.conditioning import added_time_ids
from training.precondition import Conditioning, denoise, unet_inputs
from training.sampling import euler_sigmas, sample


def _cond(batch=2, h=8, w=8, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Conditioning(
        torch.randn(batch, 1, dim, generator=g),
        torch.randn(batch, 4, h, w, generator=g),
        torch.tensor([[6.0, 127.0, 0.02]]).expand(batch, -1).clone(),
    )


# --------------------------------------------------------------------------- noise levels


def test_karras_levels_endpoints_and_order():
    s = karras_sigmas(4, 0.002, 700.0, 7.0)
    assert s[0] == pytest.approx(700.0) and s[-1] == pytest.approx(0.002)
    assert (s[1:] < s[:-1]).all()
    # closed form of the middle levels
    lo, hi = 0.002 ** (1 / 7), 700 ** (1 / 7)
    assert s[1] == pytest.approx((hi + (lo - hi) / 3) ** 7)


def test_generator_sigmas_uniform_over_first_levels():
    sampler = GeneratorSigmas(4, 0.002, 700.0)
    levels = karras_sigmas(4, 0.002, 700.0)[:3].float()
    draws = sampler(30000, torch.Generator().manual_seed(0))
    values, counts = draws.unique(return_counts=True)
    assert torch.allclose(values.sort().values, levels.sort().values)  # support = first Tg-1 levels
    assert (counts.float() / 30000 - 1 / 3).abs().max() < 0.015  # uniform
    assert 0.002 not in draws.tolist()


def test_discriminator_sigmas_support_and_lognormal_moments():
    sampler = DiscriminatorSigmas(-1.0, 1.0, 1000, 0.002, 700.0)
    assert sampler.probs.sum() == pytest.approx(1.0, abs=1e-9)
    draws = sampler(50000, torch.Generator().manual_seed(0))
    levels = set(sampler.levels.tolist())
    assert set(draws.unique().tolist()) <= levels
    logs = draws.double().log()
    assert logs.mean() == pytest.approx(-1.0, abs=0.03)
    assert logs.std() == pytest.approx(1.0, abs=0.03)
    shifted = DiscriminatorSigmas(1.0, 0.5)(20000, torch.Generator().manual_seed(1)).double().log()
    assert shifted.mean() == pytest.approx(1.0, abs=0.03) and shifted.std() == pytest.approx(0.5, abs=0.03)


# --------------------------------------------------------------------------- losses


def test_hinge_loss_hand_computed():
    real = [torch.tensor([[2.0, 0.5]]), torch.tensor([[-1.0]])]
    fake = [torch.tensor([[-2.0, 0.0]]), torch.tensor([[1.0]])]
    out = HingeDiscriminatorLoss()(real, fake)
    # head 1: real relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; head 2: relu(2)=2 -> mean over heads 1.125
    assert out["d_real"].item() == pytest.approx((0.25 + 2.0) / 2)
    # head 1: relu(1-2)=0, relu(1)=1 -> 0.5; head 2: relu(2)=2 -> 1.25
    assert out["d_fake"].item() == pytest.approx((0.5 + 2.0) / 2)
    assert out["d_hinge"].item() == pytest.approx(1.125 + 1.25)


def test_r1_penalty_of_linear_discriminator():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    x = torch.randn(4, 3, requires_grad=True)
    # two heads: per-pixel logits x*w (per-sample mean (x.w)/3) and one logit x.w;
    # D(x) = mean over heads = (2/3) x.w, so grad_x D = (2/3) w for every sample
    logits = [x * w, (x * w).sum(1)]
    r1 = R1Penalty(gamma=0.5)(logits, x)
    assert r1.item() == pytest.approx(0.5 / 2 * (4 / 9) * w.pow(2).sum().item())
    r1.backward()  # differentiable w.r.t. the discriminator's parameters: d/dw (gamma/2 * 4/9 ||w||^2)
    assert torch.allclose(w.grad, 0.5 * (4 / 9) * w.detach())


def test_pseudo_huber_hand_computed():
    pred = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    target = torch.tensor([[0.0, 4.0], [0.0, 0.0]])
    # sample 1: sqrt(25 + 1) - 1; sample 2: 0
    assert PseudoHuberLoss(c=1.0)(pred, target).item() == pytest.approx((math.sqrt(26) - 1) / 2)
    default = PseudoHuberLoss()(pred, target).item()
    c = 0.00054 * math.sqrt(2)
    assert default == pytest.approx((math.sqrt(25 + c * c) - c) / 2)


def test_generator_loss_combines_terms():
    out = GeneratorLoss(recon_weight=0.1, huber_c=1.0)([torch.tensor([[0.5, 1.5]])], torch.tensor([[3.0, 4.0]]), torch.zeros(1, 2))
    assert out["g_adv"].item() == pytest.approx(-1.0)
    assert out["g_recon"].item() == pytest.approx(math.sqrt(26) - 1)
    assert out["g_loss"].item() == pytest.approx(-1.0 + 0.1 * (math.sqrt(26) - 1))


# --------------------------------------------------------------------------- preconditioning and sampler vs diffusers


def _svd_conditioning(model, frames: int, size: int, seed: int = 0) -> tuple[torch.Tensor, Conditioning]:
    """Unit noise ``[1, F, C, h, w]`` and a random SVD conditioning of ``model``'s shapes."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    h = size // cfg.vae_scale_factor
    noise = torch.randn(1, frames, cfg.latent_channels, h, h, generator=g)
    cond = Conditioning(
        image_embeds=torch.randn(1, 1, cfg.embed_dim, generator=g),
        image_latent=torch.randn(1, cfg.latent_channels, h, h, generator=g),
        added_time_ids=torch.from_numpy(added_time_ids(7, 127, 0.02)),
    )
    return noise, cond


@pytest.mark.parametrize("steps", [1, 3])
def test_training_evaluation_equals_the_runtime(tiny_model, steps):
    """The same numbers come out of training's evaluation and the runtime for the same UNet and noise."""
    from engines.factory import torch_engines
    from runtime.denoiser import SVDDenoiser
    from runtime.sampling import initial_noise_scale, karras_sigmas
    from runtime.sampling import sample_euler as runtime_sample_euler

    frames = 2
    noise, cond = _svd_conditioning(tiny_model, frames, 64)
    cfg = tiny_model.config
    ours = sample(tiny_model.unet, noise, cond, euler_sigmas(steps, cfg.sigma_min, cfg.sigma_max))

    engines, _ = torch_engines(tiny_model, networks=["unet"])
    denoiser = SVDDenoiser(
        engines["unet"], cond.image_embeds[:, 0].numpy(), cond.image_latent.numpy(), cond.added_time_ids.numpy(), frames
    )
    sigmas = karras_sigmas(steps, cfg.sigma_min, cfg.sigma_max)
    with engines["unet"]:
        deployed = runtime_sample_euler(denoiser, noise.numpy() * initial_noise_scale(sigmas), sigmas)
    assert ours.dtype == torch.float32 and deployed.dtype == np.float32
    assert np.array_equal(ours.numpy(), deployed)  # bit for bit


def test_training_euler_sampler_follows_the_ode_with_a_linear_model():
    """Training's evaluation sampler against the closed form of Euler's method for a UNet output
    linear in its input, ``F = k * c_in * x``: then ``D(x; s) = x (1 - k s) / (s^2 + 1)`` and every
    step multiplies ``x`` by ``1 + (s + k)(s' - s) / (s^2 + 1)``. A sign flipped in the step, the
    scalings or the initial noise scale changes the result by orders of magnitude more than rounding."""
    k = 0.3

    def linear_unet(sample, timestep, encoder_hidden_states, added_time_ids, return_dict):
        return (k * sample[:, :, :4],)  # the c_in * x half of the UNet's input

    noise = torch.randn(2, 3, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    cond = Conditioning(torch.zeros(2, 1, 8), torch.zeros(2, 4, 2, 2), torch.zeros(2, 3))
    sigmas = euler_sigmas(6, 0.002, 700.0)
    ours = sample(linear_unet, noise, cond, sigmas)

    s = sigmas.double()
    factor = torch.sqrt(s[0] ** 2 + 1) * torch.prod(1 + (s[:-1] + k) * (s[1:] - s[:-1]) / (s[:-1] ** 2 + 1))
    assert torch.allclose(ours.double(), noise.double() * factor, rtol=1e-4, atol=0)
    assert not torch.allclose(ours, torch.zeros_like(ours))


def test_euler_sigmas_end_in_zero_and_one_step_is_sigma_max():
    s = euler_sigmas(1, 0.002, 700.0)
    assert s.tolist() == pytest.approx([700.0, 0.0])
    assert len(euler_sigmas(25)) == 26 and euler_sigmas(25)[-1] == 0


def test_unet_inputs_layout(tiny_model):
    x = torch.randn(2, 3, 4, 8, 8)
    cond = _cond()
    inputs = unet_inputs(x, torch.tensor([1.0, 4.0]), cond)
    assert inputs["sample"].shape == (2, 3, 8, 8, 8)
    assert torch.allclose(inputs["sample"][1, :, :4], x[1] / math.sqrt(17))
    assert torch.equal(inputs["sample"][0, 2, 4:], cond.image_latent[0])
    assert torch.allclose(inputs["timestep"], 0.25 * torch.tensor([1.0, 4.0]).log())
    out = denoise(tiny_model.unet, x, torch.tensor([1.0, 4.0]), cond)
    assert out.shape == x.shape and torch.isfinite(out).all()


# --------------------------------------------------------------------------- discriminator


@pytest.mark.parametrize("mid", [False, True])
def test_head_output_shapes(tiny_model, mid):
    backbone = UNetEncoder(tiny_model.unet, use_mid_block=mid)
    heads = DiscriminatorHeads(backbone.channels, tiny_model.config.embed_dim)
    b, f = 2, 3
    logits = discriminate(backbone, heads, torch.randn(b, f, 4, 8, 8), torch.tensor([0.5, 3.0]), _cond())
    blocks = len(tiny_model.unet.down_blocks) + int(mid)
    assert len(logits) == 2 * blocks
    # tiny UNet: block 0 downsamples 8x8 -> 4x4, block 1 (last) keeps 4x4
    for k in range(blocks):
        assert logits[k].shape == (b, f, 4, 4)  # spatial head
        assert logits[blocks + k].shape == (b, 4, 4, f)  # temporal head
    spatial_only = DiscriminatorHeads(backbone.channels, 32, temporal=False)
    assert len(discriminate(backbone, spatial_only, torch.randn(b, f, 4, 8, 8), torch.tensor([0.5, 3.0]), _cond())) == blocks


def test_backbone_matches_unet_encoder(tiny_model):
    """The backbone's last features equal the UNet's own down-block output (hooked)."""
    unet = tiny_model.unet
    backbone = UNetEncoder(unet)
    x, cond, sigma = torch.randn(1, 2, 4, 8, 8), _cond(1), torch.tensor([2.0])
    seen = {}
    handle = unet.down_blocks[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("out", o[0]))
    with torch.no_grad():
        unet(**unet_inputs(x, sigma, cond))
        ours = backbone(**unet_inputs(x, sigma, cond))
    handle.remove()
    assert torch.allclose(ours[-1], seen["out"], atol=1e-5)


# --------------------------------------------------------------------------- training loop


def _trainer(tiny_model_dir, tmp_path, latents=None, **kw):
    from networks.models import load_model
    from training.sfv import SFVConfig, SFVTrainer

    cfg = SFVConfig(model=str(tiny_model_dir), out=str(tmp_path), frames=3, height=32, width=32, num_clips=4,
                    batch_size=2, optimizer="adam", **kw)
    return SFVTrainer(cfg, model=load_model(tiny_model_dir), latents=latents)


@pytest.fixture(scope="module")
def tiny_latents(tiny_model, tmp_path_factory):
    from training.data import load_latents

    return load_latents(tiny_model, "synthetic", 3, 32, 32, num_clips=4, seed=0)


def test_backbone_frozen_heads_and_generator_train(tiny_model_dir, tmp_path, tiny_latents):
    t = _trainer(tiny_model_dir, tmp_path, tiny_latents, lr_g=1e-3, lr_d=1e-3)
    backbone0 = {k: v.clone() for k, v in t.backbone.state_dict().items()}
    heads0 = {k: v.clone() for k, v in t.heads.state_dict().items()}
    gen0 = {k: v.clone() for k, v in t.generator.state_dict().items()}
    for _ in range(2):
        metrics = t.train_step()
    assert set(metrics) >= {"d_real", "d_fake", "d_hinge", "r1", "d_loss", "g_adv", "g_recon", "g_loss"}
    assert all(not p.requires_grad for p in t.backbone.parameters())
    assert all(torch.equal(v, backbone0[k]) for k, v in t.backbone.state_dict().items())
    assert any(not torch.equal(v, heads0[k]) for k, v in t.heads.state_dict().items())
    changed = [k for k, v in t.generator.state_dict().items() if not torch.equal(v, gen0[k])]
    assert len(changed) > 0.9 * len(gen0)


def test_few_steps_reduce_reconstruction_on_fixed_batch(tiny_model_dir, tmp_path, tiny_latents):
    t = _trainer(tiny_model_dir, tmp_path, tiny_latents, lr_g=2e-3, r1_gamma=0.0, recon_weight=1.0)
    batch = [t._draw()]

    def recon():
        x0, cond, d = batch[0]
        with torch.no_grad():
            pred = denoise(t.generator, x0 + d["sigma"][:, None, None, None, None] * d["eps"], d["sigma"], cond)
        return t.g_loss.recon(pred, x0).item()

    before = recon()
    for _ in range(6):
        t.generator_step(batch)
    assert recon() < 0.8 * before


def test_resume_gives_same_next_step_loss(tiny_model_dir, tmp_path, tiny_latents):
    full = _trainer(tiny_model_dir, tmp_path / "a", tiny_latents, lr_g=1e-3)
    losses = [full.train_step() for _ in range(3)]
    first = _trainer(tiny_model_dir, tmp_path / "b", tiny_latents, lr_g=1e-3)
    for _ in range(2):
        first.train_step()
    first.save()
    resumed = _trainer(tiny_model_dir, tmp_path / "b", tiny_latents, lr_g=1e-3)
    assert resumed.resume() and resumed.step == 2
    again = resumed.train_step()
    for key in ("d_loss", "g_loss", "g_recon"):
        assert again[key] == pytest.approx(losses[2][key], rel=1e-5, abs=1e-6)
    fresh = _trainer(tiny_model_dir, tmp_path / "c", tiny_latents, lr_g=1e-3).train_step()
    assert fresh["g_recon"] != pytest.approx(losses[2]["g_recon"], rel=1e-5)  # the comparison can fail


def test_cli_trains_saves_and_unet_loads_and_exports(tiny_model_dir, tmp_path, capsys):
    from networks.models import load_model
    from training.sfv import main

    out = tmp_path / "run"
    rc = main(["--model", str(tiny_model_dir), "--data", "synthetic", "--max-steps", "2", "--out", str(out),
               "--frames", "3", "--height", "32", "--width", "32", "--num-clips", "2", "--optimizer", "adam",
               "--no-progress", "--log-every", "1"])
    assert rc == 0
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert (out / "metrics.csv").read_text().startswith("step,")
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-0000002"
    model = load_model(tiny_model_dir, unet=out / "unet")
    teacher = load_model(tiny_model_dir)
    diff = max((a - b).abs().max().item() for a, b in zip(model.unet.parameters(), teacher.unet.parameters()))
    assert diff > 0  # the saved UNet is the trained generator, not the teacher
    try:
        from export.onnx import export_bundle
    except ImportError:
        pytest.skip("export.onnx not available")
    bundle = export_bundle(str(tiny_model_dir), tmp_path / "bundle", networks=["unet"], unet=out / "unet", progress=False)
    assert (tmp_path / "bundle" / "manifest.json").is_file()
    assert bundle is not None


def test_cli_rejects_bad_options(tiny_model_dir, tmp_path, capsys):
    from training.sfv import main

    assert main(["--model", str(tiny_model_dir), "--lr-g", "-1", "--out", str(tmp_path)]) == 2
    assert "--lr-g" in capsys.readouterr().err
    assert main(["--model", str(tiny_model_dir), "--height", "40", "--dry-run", "--out", str(tmp_path)]) == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert main(["--model", str(tiny_model_dir), "--data", str(tmp_path / "none"), "--dry-run", "--out", str(tmp_path)]) == 2
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["training.sfv", "training.teacher"])
def test_help_explains_every_option_with_examples(module):
    import importlib

    parser = importlib.import_module(module).build_parser()
    for action in parser._actions:
        assert action.help and len(action.help.split()) >= 3, f"{action.option_strings} has no explanation"
        assert not action.help.startswith("enable "), action.option_strings
    text = parser.format_help()
    assert "examples:" in text and f"python -m {module} --model tiny" in text
    assert "--resume" not in text or "continue from OUT/checkpoints/latest" in " ".join(text.split())


def test_progress_bar_stays_out_of_non_terminal_logs():
    import io

    from training.sfv import progress_bar

    log = io.StringIO()  # a redirected stream: not a TTY
    with progress_bar(5, "sf-v", True, file=log) as bar:
        for _ in range(5):
            bar.update(1)
    assert log.getvalue() == ""
    assert progress_bar(5, "sf-v", False).disable


def test_sm3_optimizer_from_pytorch_optimizer():
    pytest.importorskip("pytorch_optimizer")
    from training.sfv import make_optimizer

    p = torch.nn.Parameter(torch.ones(3, 2))
    opt = make_optimizer("sm3", [p], 1e-2, (0.5, 0.999))
    (p**2).sum().backward()
    opt.step()
    assert (p < 1).all()


# --------------------------------------------------------------------------- data


def test_synthetic_clips_shapes_and_labels():
    from training.data import MOTIONS, synthetic_clips

    clips, labels = synthetic_clips(14, 4, 32, seed=3)
    assert all(c.shape == (4, 3, 32, 32) for c in clips)
    assert all(-1 <= c.min() and c.max() <= 1 for c in clips)
    assert set(labels) <= set(range(len(MOTIONS)))
    pan = [c for c, l in zip(clips, labels) if MOTIONS[l].startswith("pan")]
    assert pan and all((c[1:] - c[:-1]).abs().mean() > 0 for c in pan)  # frames move


def test_encoded_latents_follow_svd_conditioning(tiny_model, tiny_latents):
    n = len(tiny_latents)
    assert tiny_latents.latents.shape == (n, 3, 4, 4, 4)
    assert tiny_latents.image_latents.shape == (n, 4, 4, 4)
    assert tiny_latents.image_embeds.shape == (n, 1, tiny_model.config.embed_dim)
    assert torch.allclose(tiny_latents.added_time_ids[0], torch.tensor([6.0, 127.0, 0.02]))
    # x0 latents are scaled; the conditioning latent (noise-augmented first frame) is not
    ratio = tiny_latents.latents[:, 0].std() / tiny_latents.image_latents.std()
    assert ratio.item() == pytest.approx(tiny_model.config.scaling_factor, rel=0.1)


def test_encoded_conditioning_is_what_the_runtime_computes(tiny_model, tiny_bundle):
    """Training's CLIP embedding, conditioning latent and time ids of a clip are the runtime's for
    its first frame given as an image (no train/serve skew in the conditioning)."""
    from engines.factory import create_engines
    from runtime.preprocess import pixels, vae_pixels
    from training.data import encode_clips, first_frame_image, synthetic_clips

    clips, _ = synthetic_clips(2, 3, 32, seed=1)
    encoded = encode_clips(tiny_model, clips, fps=9.0, motion_bucket_id=100.0, noise_aug_strength=0.0)
    engines = create_engines(tiny_bundle, "onnxruntime", networks=["clip_preprocess", "image_encoder", "vae_encoder"])
    for i, clip in enumerate(clips):
        image = first_frame_image(clip[0])
        clip_view = engines["clip_preprocess"].run({"pixels": pixels(image)})["pixel_values"]
        embeds = engines["image_encoder"].run({"pixel_values": clip_view})["image_embeds"]
        latent = engines["vae_encoder"].run({"image": vae_pixels(image, 32, 32)})["latent"]
        np.testing.assert_allclose(encoded.image_embeds[i].numpy(), embeds, atol=1e-4)
        np.testing.assert_allclose(encoded.image_latents[i].numpy(), latent[0], atol=1e-4)
    assert torch.equal(encoded.added_time_ids, torch.as_tensor(added_time_ids(9, 100, 0.0)).expand(2, -1))


def test_video_directory_and_bigbuckbunny(tmp_path):
    import imageio.v3 as iio

    from training.data import DataError, bigbuckbunny_path, directory_clips, video_clips

    frames = (np.random.default_rng(0).random((10, 48, 64, 3)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "a.mp4", frames, plugin="pyav", codec="libx264", fps=10)
    clips, fps = directory_clips(tmp_path, frames=3, height=32, width=32, stride=2)
    assert len(clips) == 1 and clips[0].shape == (3, 3, 32, 32)  # 5 kept frames -> one clip of 3
    assert fps == pytest.approx(5.0)
    with pytest.raises(DataError, match="no video files"):
        directory_clips(_empty(tmp_path), 3, 32, 32)
    first = next(video_clips(bigbuckbunny_path(), 2, 32, 48))
    assert first.shape == (2, 3, 32, 48) and -1 <= first.min() and first.max() <= 1


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


# --------------------------------------------------------------------------- Frechet distance


def test_frechet_distance_closed_form_gaussians():
    rng = np.random.default_rng(0)
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 2.0, 0.5]), np.array([1.5, 1.0, 0.5])
    analytic = ((m1 - m2) ** 2).sum() + ((a - b) ** 2).sum()
    assert frechet_distance(m1, np.diag(a**2), m2, np.diag(b**2)) == pytest.approx(analytic, rel=1e-9)
    sampled = frechet_distance_features(m1 + a * rng.normal(size=(40000, 3)), m2 + b * rng.normal(size=(40000, 3)))
    assert sampled == pytest.approx(analytic, rel=0.03)
    x = rng.normal(size=(100, 4))
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- teacher and FVD plumbing


def test_teacher_fine_tuning_writes_a_loadable_unet(tiny_model_dir, tmp_path):
    from networks.models import load_model
    from training.teacher import main

    out = tmp_path / "teacher"
    assert main(["--model", str(tiny_model_dir), "--out", str(out), "--max-steps", "3", "--frames", "3", "--height", "32",
                 "--width", "32", "--num-clips", "2", "--log-every", "1", "--lr", "1e-3", "--no-progress"]) == 0
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(math.isfinite(r["edm_loss"]) and r["edm_loss"] > 0 for r in rows)
    trained = load_model(tiny_model_dir, unet=out / "unet").unet
    teacher = load_model(tiny_model_dir).unet
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), teacher.parameters()))


def test_fvd_needs_user_weights_and_videos(tmp_path):
    from training.data import DataError
    from training.fvd import load_i3d, load_videos

    with pytest.raises(DataError, match="i3d_torchscript.pt"):
        load_i3d(tmp_path / "missing.pt")
    with pytest.raises(DataError, match="at least 2 videos"):
        load_videos(tmp_path)


def test_gradient_checkpointing_gives_the_same_update(tiny_model_dir, tmp_path, tiny_latents):
    plain = _trainer(tiny_model_dir, tmp_path / "a", tiny_latents, lr_g=1e-3)
    ckpt = _trainer(tiny_model_dir, tmp_path / "b", tiny_latents, lr_g=1e-3, gradient_checkpointing=True)
    assert ckpt.generator.is_gradient_checkpointing and not plain.generator.is_gradient_checkpointing
    a, b = plain.train_step(), ckpt.train_step()
    assert a["g_loss"] == pytest.approx(b["g_loss"], rel=1e-5)
    for p, q in zip(plain.generator.parameters(), ckpt.generator.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_cli_dry_run_reports_the_data(tiny_model_dir, tmp_path, capsys):
    from training.sfv import main

    assert main(["--model", str(tiny_model_dir), "--dry-run", "--out", str(tmp_path), "--frames", "3", "--height", "32",
                 "--width", "32", "--num-clips", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["latents"] == [2, 3, 4, 4, 4]
    assert not (tmp_path / "unet").exists()  # no training happened
