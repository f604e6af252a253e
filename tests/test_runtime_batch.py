"""Batched clips, progress callbacks and cancellation, and one pipeline shared by threads
(``runtime.pipeline.VideoPipeline`` on the tiny bundle; ONNX Runtime unless a test names another backend).

The central property: a clip made in a batch equals the same clip made alone with the same noise.
ONNX Runtime's kernels give each clip of a batch the same bits as a clip alone, so its tests ask
for bit equality, for every sampler and with guidance; OpenVINO and PyTorch within one uint8 level.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import PIL.Image
import pytest

from contract.errors import ToolkitError
from runtime.errors import Cancelled, InputError
from runtime.noise import ExplicitNoise, SplitMixNoise
from runtime.pipeline import STAGES, VideoPipeline, VideoResult
from runtime.progress import ProgressEvent

FRAMES = 14  # the tiny model's default clip, 64x64
SFV = dict(steps=1, min_guidance=1.0, max_guidance=1.0)
GUIDED = dict(steps=2, min_guidance=1.0, max_guidance=2.5)  # UNet batch 2B
LCM = dict(sampler="lcm", steps=3)  # fresh noise between steps, guidance 1.0 -> 1.2 (batch 2B)
QUIET = dict(progress=False, generator="splitmix")


@pytest.fixture(scope="module")
def images():
    """Three images of different sizes (the CLIP view is made per image, at any size)."""
    rs = np.random.RandomState(7)
    return [PIL.Image.fromarray((rs.rand(64 + 8 * i, 64, 3) * 255).astype(np.uint8)) for i in range(3)]


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    with VideoPipeline.from_bundle(tiny_bundle, backend="onnxruntime", threads=1) as p:
        yield p


class Spy:
    """Records the inputs of every ``run`` of an engine (the engine itself runs unchanged)."""

    def __init__(self, engine):
        self.engine, self.inputs = engine, []

    def __enter__(self):
        original = type(self.engine).run.__get__(self.engine)
        self.engine.run = lambda inputs: self.inputs.append(inputs) or original(inputs)
        return self

    def __exit__(self, *exc):
        del self.engine.run


# --------------------------------------------------------------------------- batch = alone


@pytest.mark.parametrize("kind", [SFV, GUIDED, LCM], ids=["sfv", "guided", "lcm"])
def test_a_clip_in_a_batch_equals_the_clip_alone(pipe, images, kind):
    batch = pipe(images, num_frames=FRAMES, seeds=[5, 9, 2], **kind, **QUIET)
    assert isinstance(batch, list) and len(batch) == 3
    for result, image, seed in zip(batch, images, [5, 9, 2]):
        alone = pipe(image, num_frames=FRAMES, seed=seed, **kind, **QUIET)
        assert result.options == alone.options and result.options.seed == seed
        assert np.array_equal(result.latents, alone.latents)  # bit for bit
        assert np.array_equal(result.frames, alone.frames)
    assert not np.array_equal(batch[0].latents, batch[1].latents)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="OpenVINO is not installed")
def test_openvino_batch_equals_alone(tiny_bundle, images):
    """Bit-identical on the AVX-512 Xeon this was measured on; asserted within one uint8 level,
    OpenVINO's guarantee across CPUs (its kernels may block a batch differently elsewhere)."""
    with VideoPipeline.from_bundle(tiny_bundle, backend="openvino", threads=1) as ov:
        batch = ov(images[:2], num_frames=FRAMES, **GUIDED, **QUIET)
        for i, image in enumerate(images[:2]):
            alone = ov(image, num_frames=FRAMES, seed=i, **GUIDED, **QUIET).frames
            assert np.abs(batch[i].frames.astype(int) - alone).max() <= 1


def test_torch_backend_batch_within_one_level(tiny_model, images):
    """PyTorch's CPU kernels block a batch differently: the clips agree within one uint8 level."""
    pipe = VideoPipeline.from_model(tiny_model)
    batch = pipe(images[:2], num_frames=4, **SFV, **QUIET)
    for i, image in enumerate(images[:2]):
        alone = pipe(image, num_frames=4, seed=i, **SFV, **QUIET)
        assert np.abs(batch[i].frames.astype(int) - alone.frames).max() <= 1


def test_networks_see_the_batch(pipe, images):
    """CLIP and the VAE encoder once at batch B, the UNet at B (2B guided, unconditional half first,
    with zero embeddings and latents), the decoder once per clip."""
    e = pipe.engines
    with Spy(e.image_encoder) as clip, Spy(e.vae_encoder) as vae, Spy(e.unet) as unet, Spy(e.vae_decoder) as dec:
        pipe(images, num_frames=4, decode_chunk_size=3, **GUIDED, **QUIET)
    assert [i["pixel_values"].shape[0] for i in clip.inputs] == [3]
    assert [i["image"].shape[0] for i in vae.inputs] == [3]
    assert [i["sample"].shape[0] for i in unet.inputs] == [6, 6]
    h = unet.inputs[0]["encoder_hidden_states"]
    assert not h[:3].any() and h[3:].any()
    assert not unet.inputs[0]["sample"][:3, :, 4:].any() and unet.inputs[0]["sample"][3:, :, 4:].any()
    assert [i["latent"].shape[0] for i in dec.inputs] == [3, 1] * 3  # two chunks of each clip's 4 frames
    with Spy(e.unet) as unet:
        pipe(images, num_frames=4, output="latents", **SFV, **QUIET)
    assert [i["sample"].shape[0] for i in unet.inputs] == [3]


def test_results_and_randomness(pipe, images):
    one = pipe(images[0], num_frames=2, output="latents", **SFV, **QUIET)
    assert isinstance(one, VideoResult) and one.latents.shape == (1, 2, 4, 8, 8)
    results = pipe(tuple(images), num_frames=2, seed=10, output="latents", **SFV, **QUIET)
    assert [r.options.seed for r in results] == [10, 11, 12]  # default: options.seed + i
    assert all(r.latents.shape == (1, 2, 4, 8, 8) and r.frames is None for r in results)
    t = results[0].timings
    assert set(t) == set(STAGES) | {"total", "unet_calls", "steps", "batch"} and t["batch"] == 3 and t["unet_calls"] == 1
    # explicit noise, one source per image, equals the seeded generator it replays
    shape = (1, 2, 4, 8, 8)
    noise = [ExplicitNoise(SplitMixNoise(s).augmentation((1, 3, 64, 64)), SplitMixNoise(s).latents(shape)) for s in (10, 11, 12)]
    replayed = pipe(images, num_frames=2, noise=noise, output="latents", **SFV, **QUIET)
    assert all(np.array_equal(a.latents, b.latents) for a, b in zip(replayed, results))
    single = pipe([images[1]], num_frames=2, seeds=[11], output="latents", **SFV, **QUIET)
    assert isinstance(single, list) and np.array_equal(single[0].latents, results[1].latents)


@pytest.mark.parametrize("call,match", [
    (dict(image=[]), "empty"),
    (dict(seeds=[1, 2]), r"one seed per image \(3\)"),
    (dict(seeds=[1, -2, 3]), "non-negative"),
    (dict(seeds=[1, 2, 3], noise=[None] * 3), "not both"),
    (dict(noise=[SplitMixNoise(0)]), "3 noise sources"),
    (dict(image="single", noise=[SplitMixNoise(0)]), "single one"),
])
def test_batch_argument_errors(pipe, images, call, match):
    call = dict(call)
    image = call.pop("image", images)
    image = images[0] if image == "single" else image
    with pytest.raises(InputError, match=match):
        pipe(image, num_frames=2, output="latents", **SFV, **QUIET, **call)


# --------------------------------------------------------------------------- callbacks and cancel


def test_progress_events(pipe, images):
    events: list[ProgressEvent] = []
    results = pipe(images[:2], num_frames=4, steps=3, max_guidance=2.0, decode_chunk_size=3, callback=events.append, **QUIET)
    assert [(e.stage, e.step, e.total) for e in events] == (
        [("preprocess", 1, 2), ("preprocess", 2, 2), ("image_encoder", 1, 1), ("vae_encoder", 1, 1)]
        + [("unet", i, 3) for i in (1, 2, 3)] + [("vae_decoder", i, 4) for i in (1, 2, 3, 4)]
    )
    assert all(e.stage in STAGES for e in events)
    unet = [e for e in events if e.stage == "unet"]
    from runtime.sampling import karras_sigmas

    assert [e.sigma for e in unet] == [float(s) for s in karras_sigmas(3, pipe.config.sigma_min, pipe.config.sigma_max)[:3]]
    assert all(e.latents.shape == (2, 4, 4, 8, 8) and e.denoised.shape == (2, 4, 4, 8, 8) for e in unet)
    assert np.array_equal(unet[-1].latents[1:], results[1].latents)
    np.testing.assert_allclose(unet[-1].latents, unet[-1].denoised, atol=1e-5)  # the last Euler step lands on D (sigma 0)
    assert all(e.sigma is None and e.latents is None for e in events if e.stage != "unet")
    with pytest.raises(dataclasses.FrozenInstanceError):
        events[0].step = 5


def test_lcm_events_carry_the_denoised_estimate(pipe, images):
    events = []
    pipe(images[0], num_frames=2, output="latents", callback=events.append, **LCM, **QUIET)
    unet = [e for e in events if e.stage == "unet"]
    assert len(unet) == 3 and not np.array_equal(unet[0].latents, unet[0].denoised)  # re-noised after the step


@pytest.mark.parametrize("stop_at", [("preprocess", 1), ("unet", 1), ("vae_decoder", 2)])
def test_callback_returning_true_cancels(pipe, images, stop_at):
    seen = []

    def callback(event):
        seen.append((event.stage, event.step))
        return (event.stage, event.step) == stop_at

    with Spy(pipe.engines.vae_decoder) as dec, pytest.raises(Cancelled, match=f"{stop_at[0]} {stop_at[1]}/") as info:
        pipe(images[:2], num_frames=2, steps=2, max_guidance=1.0, callback=callback, **QUIET)
    assert isinstance(info.value, ToolkitError)
    assert seen[-1] == stop_at  # nothing ran after the cancelling event
    assert len(dec.inputs) == (stop_at[1] if stop_at[0] == "vae_decoder" else 0)


def test_other_callback_answers_go_on(pipe, images):
    ref = pipe(images[0], num_frames=2, output="latents", **SFV, **QUIET).latents
    for answer in (None, False, {"latents": 0}, 1):
        got = pipe(images[0], num_frames=2, output="latents", callback=lambda e, a=answer: a, **SFV, **QUIET)
        assert np.array_equal(got.latents, ref)


# --------------------------------------------------------------------------- threads


def _concurrent(pipe, images, kind, threads: int) -> list[np.ndarray]:
    """Every clip made on its own thread, all starting together; returns the frames in order."""
    barrier = threading.Barrier(threads)

    def clip(i):
        barrier.wait()
        return pipe(images[i % len(images)], num_frames=FRAMES, seed=i, **kind, **QUIET).frames

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(clip, range(threads)))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_one_pipeline_serves_threads(tiny_bundle, images, backend):
    """4 threads on one pipeline, engines activated lazily by the threads' first calls (each
    engine loads once), give the clips one thread gives."""
    if backend == "openvino" and importlib.util.find_spec("openvino") is None:
        pytest.skip("OpenVINO is not installed")
    shared = VideoPipeline.from_bundle(tiny_bundle, backend=backend, threads=1)
    loads = {e.spec.name: 0 for e in shared.engines.all()}
    for engine in shared.engines.all():
        original = engine._activate
        engine._activate = lambda e=engine, f=original: loads.__setitem__(e.spec.name, loads[e.spec.name] + 1) or f()
    try:
        kind = GUIDED if backend == "onnxruntime" else SFV
        together = _concurrent(shared, images, kind, threads=4)
        assert set(loads.values()) == {1}, loads
        alone = [shared(images[i % 3], num_frames=FRAMES, seed=i, **kind, **QUIET).frames for i in range(4)]
        assert all(np.array_equal(a, b) for a, b in zip(together, alone))
    finally:
        shared.close()


def test_threads_and_batches_together(pipe, images):
    """Batched calls from 3 threads at once: each equals its clips made one by one."""
    barrier = threading.Barrier(3)

    def batch(k):
        barrier.wait()
        return pipe(images, num_frames=4, seeds=[3 * k, 3 * k + 1, 3 * k + 2], output="latents", **LCM, **QUIET)

    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(batch, range(3)))
    for k in range(3):
        for i in range(3):
            alone = pipe(images[i], num_frames=4, seed=3 * k + i, output="latents", **LCM, **QUIET)
            assert np.array_equal(got[k][i].latents, alone.latents)
            assert got[k][i].timings["unet_calls"] == 3  # each call counts its own UNet calls


# --------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def image_dir(images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for name, image in zip(("a.png", "b.jpg", "c.webp"), images):
        image.save(folder / name, **({"lossless": True} if name.endswith("webp") else {"quality": 95} if name.endswith("jpg") else {}))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_cli_one_clip_per_image(tiny_bundle, image_dir, tmp_path, capsys):
    """3 images, at most 2 per pass: out/<stem>.npy each, seed + index, equal to the API's clips."""
    from runtime.generate import main

    common = ["--bundle", str(tiny_bundle), "--frames", "3", "--steps", "1", "--max-guidance", "1", "--threads", "1",
              "--generator", "splitmix", "--seed", "4", "--quiet", "--format", "npy"]
    files = [str(image_dir / n) for n in ("a.png", "b.jpg", "c.webp")]
    assert main(common + ["--image", *files, "--out", str(tmp_path / "out"), "--batch", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("wrote") == 3 and "seed 6" in printed and "for 2 clips" in printed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npy", "b.npy", "c.npy"]
    with VideoPipeline.from_bundle(tiny_bundle, threads=1) as pipe:
        ref = pipe(files, num_frames=3, seed=4, **SFV, **QUIET)
    for name, result in zip("abc", ref):
        assert np.array_equal(np.load(tmp_path / "out" / f"{name}.npy"), result.frames)
    # a directory of images: the same clips (its images sorted by name, other files skipped), as mp4 by default
    assert main(common[:-2] + ["--image", str(image_dir), "--out", str(tmp_path / "dir")]) == 0
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["a.mp4", "b.mp4", "c.mp4"]


def test_cli_batch_errors(tiny_bundle, image_dir, tmp_path, capsys):
    from runtime.generate import main

    def fails(args, match):
        rc = main(["--bundle", str(tiny_bundle), "--quiet", *args])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and match in err and "Traceback" not in err, err

    two = ["--image", str(image_dir / "a.png"), str(image_dir / "b.jpg")]
    fails([*two, "--out", str(tmp_path / "clip.mp4")], "names a file")
    (tmp_path / "taken").write_text("")
    fails([*two, "--out", str(tmp_path / "taken")], "is a file")
    fails([*two, "--out", str(tmp_path / "o"), "--save-noise", str(tmp_path / "n.npz")], "--save-noise goes with one image")
    fails([*two, "--out", str(tmp_path / "o"), "--batch", "0"], "--batch must be a positive integer")
    (tmp_path / "other").mkdir()
    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "other" / "a.png")
    fails(["--image", str(image_dir / "a.png"), str(tmp_path / "other" / "a.png"), "--out", str(tmp_path / "o")], "both write")
    (tmp_path / "empty").mkdir()
    fails(["--image", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], "without images")
    fails([*two, str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")], "does not exist")
    assert not (tmp_path / "o").exists() and not (tmp_path / "clip.mp4").exists()
