"""The start-up caches: ONNX Runtime's optimised graphs (engines/ort_cache.py, and the C++
runtime's runtime/cpp/src/ort_cache.cpp) and the graphs' sha256 remembered by stat
(contract/checksums.py). Hits, misses, keys that name another ORT / CPU / graph, bit-identical
clips with and without the cache, atomic entries, and read-only bundles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import PIL.Image
import pytest

from engines import ort_cache
from engines.ort_cache import CACHE_DIR_NAME, KEY_FILE, MODEL_FILE, GraphCache, cache_key, entry_name
from contract.bundle import Bundle, sha256_file
from contract.checksums import ChecksumCache
from contract.errors import BundleError
from runtime.options import GenerateOptions
from runtime.pipeline import VideoPipeline

ROOT = Path(__file__).resolve().parents[1]
CPP = ROOT / "runtime" / "cpp"
SF_V = GenerateOptions(steps=1, max_guidance=1.0, generator="splitmix", seed=5)  # SF-V's one step


@pytest.fixture
def bundle(tiny_bundle, tmp_path) -> Path:
    """A private copy of the tiny bundle without any cache."""
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out, ignore=shutil.ignore_patterns(CACHE_DIR_NAME))
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("startup-image") / "in.png"
    rng = np.random.default_rng(7)
    PIL.Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(path)
    return path


def _clip(bundle: Path, image, **cache) -> tuple[np.ndarray, np.ndarray, dict]:
    """(frames, latents, {network: cache_hit}) of one SF-V clip at the model's 14 frames."""
    with VideoPipeline.from_bundle(bundle, **cache) as pipe:
        result = pipe(image, SF_V, progress=False)
        hits = {e.spec.name: e.cache_hit for e in pipe.engines.all()}
    assert result.frames.shape[0] == 14
    return result.frames, result.latents, hits


def _entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.is_dir()) if cache.is_dir() else []


# ---------------------------------------------------------------------------- hits and misses


def test_cold_then_warm_cache_gives_bit_identical_clips(bundle, image):
    frames0, latents0, hits0 = _clip(bundle, image, ort_cache=False)
    assert set(hits0.values()) == {None} and not (bundle / CACHE_DIR_NAME).exists()
    frames1, latents1, hits1 = _clip(bundle, image)  # cold: optimise and write
    assert set(hits1.values()) == {False}
    cache = bundle / CACHE_DIR_NAME
    assert len(_entries(cache)) == len(hits1)  # one entry per network, nothing left half-written
    frames2, latents2, hits2 = _clip(bundle, image)  # warm: the optimised graphs, optimisation off
    assert set(hits2.values()) == {True}
    assert len(_entries(cache)) == len(hits1)
    for frames, latents in ((frames1, latents1), (frames2, latents2)):
        assert np.array_equal(frames, frames0) and latents.tobytes() == latents0.tobytes()


def test_entry_holds_the_key_and_an_optimised_graph(bundle, image):
    _clip(bundle, image)
    b = Bundle.load(bundle)
    key = cache_key(b.variant("unet")["sha256"])
    entry = bundle / CACHE_DIR_NAME / entry_name(key)
    assert (entry / KEY_FILE).read_text() == key
    assert GraphCache(bundle / CACHE_DIR_NAME).lookup(key) == entry / MODEL_FILE
    optimised = onnx.load(str(entry / MODEL_FILE), load_external_data=False)
    source = onnx.load(str(bundle / "unet.onnx"), load_external_data=False)
    assert len(optimised.graph.node) < len(source.graph.node)  # fused: not a copy of the source


def test_key_names_the_ort_version_the_cpu_and_the_graph():
    base = dict(ort_version="1.20.0", flags=frozenset({"avx2", "fma", "sse4_2"}), machine="x86_64")
    key = cache_key("ab" * 32, **base)
    assert key == cache_key("ab" * 32, **{**base, "flags": frozenset({"sse4_2", "avx2", "fma"})})  # order-free
    others = [
        cache_key("cd" * 32, **base),  # another graph
        cache_key("ab" * 32, **{**base, "ort_version": "1.21.0"}),
        cache_key("ab" * 32, **{**base, "flags": frozenset({"avx2", "fma", "sse4_2", "avx512f"})}),
        cache_key("ab" * 32, **{**base, "machine": "aarch64"}),
    ]
    assert len({entry_name(k) for k in [key, *others]}) == 5
    assert "cpu_flags avx2 fma sse4_2\n" in key and "onnxruntime 1.20.0\n" in key


@pytest.mark.parametrize("change", ["cpu_flags", "ort_version"])
def test_entries_of_another_machine_or_ort_are_not_used(bundle, image, monkeypatch, change):
    """A cache made under other CPU flags or another ORT version is a miss (written anew beside it)."""
    _, latents0, _ = _clip(bundle, image)
    before = _entries(bundle / CACHE_DIR_NAME)
    if change == "cpu_flags":
        monkeypatch.setattr(ort_cache, "cpu_flags", lambda: frozenset({"sse2"}))
    else:
        monkeypatch.setattr(onnxruntime, "__version__", "0.0.1")
    _, latents1, hits = _clip(bundle, image)
    assert set(hits.values()) == {False}
    after = _entries(bundle / CACHE_DIR_NAME)
    assert set(before) < set(after) and len(after) == 2 * len(before)
    assert latents1.tobytes() == latents0.tobytes()


def test_a_changed_graph_misses(bundle, image):
    """Re-exported graphs have another sha256 in the manifest: their old entries are never used."""
    _clip(bundle, image)
    manifest = json.loads((bundle / "manifest.json").read_text())
    old = manifest["networks"]["vae_encoder"]["variants"]["fp32"]
    # Stand-in for a re-export: another valid graph with the same signature (the same graph, one node renamed).
    model = onnx.load(str(bundle / old["file"]))
    model.graph.node[0].name += "_changed"
    onnx.save(model, str(bundle / old["file"]))
    old["sha256"] = sha256_file(bundle / old["file"])
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _, _, hits = _clip(bundle, image)
    assert hits["vae_encoder"] is False and hits["unet"] is True


def test_a_graph_changed_behind_the_manifest_still_fails_verification(bundle, image):
    """The stat-remembered sha256 never hides a changed file: its ctime/size changed, so it is hashed again."""
    _clip(bundle, image)
    with open(bundle / "vae_decoder.onnx", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02")
    with pytest.raises(BundleError, match="does not match the sha256 in the manifest"):
        VideoPipeline.from_bundle(bundle)


# ---------------------------------------------------------------------------- atomic entries


def test_unfinished_and_damaged_entries_are_never_used(bundle, image):
    _, latents0, _ = _clip(bundle, image, ort_cache=False)
    key = cache_key(Bundle.load(bundle).variant("unet")["sha256"])
    cache = GraphCache(bundle / CACHE_DIR_NAME)
    # An interrupted write: ORT's output in the temporary directory, never renamed into place.
    pending = cache.begin(key)
    pending.model.write_bytes(b"half a graph")
    assert cache.lookup(key) is None
    pending.discard()
    assert not pending.tmp.exists()
    # A damaged entry under the right name (its graph truncated): optimised again and replaced.
    _clip(bundle, image)
    entry = bundle / CACHE_DIR_NAME / entry_name(key)
    (entry / MODEL_FILE).write_bytes((entry / MODEL_FILE).read_bytes()[:1000])
    _, latents1, hits = _clip(bundle, image)
    assert hits["unet"] is False and latents1.tobytes() == latents0.tobytes()
    _, _, hits = _clip(bundle, image)
    assert hits["unet"] is True
    # An entry whose key file says another key (edited, or a collision of the name) is not used.
    (entry / KEY_FILE).write_text(key.replace("level all", "level basic"))
    assert cache.lookup(key) is None and not entry.exists()
    assert not [p for p in (bundle / CACHE_DIR_NAME).iterdir() if p.name.startswith(".")]


def test_commit_renames_a_whole_entry_and_the_first_writer_wins(tmp_path):
    cache = GraphCache(tmp_path / "cache")
    key = cache_key("ee" * 32)
    first, second = cache.begin(key), cache.begin(key)
    for p, text in ((first, b"first"), (second, b"second")):
        p.model.write_bytes(text)
    assert cache.lookup(key) is None  # nothing visible before the rename
    assert first.commit() == tmp_path / "cache" / entry_name(key) / MODEL_FILE
    assert second.commit() is None  # the entry exists: the second writer's copy is dropped
    assert cache.lookup(key).read_bytes() == b"first"
    assert _entries(tmp_path / "cache") == [entry_name(key)]


# ---------------------------------------------------------------------------- stat-remembered sha256


def test_checksums_are_remembered_by_stat(tmp_path):
    graph = tmp_path / "g.onnx"
    graph.write_bytes(b"graph bytes")
    record = tmp_path / "cache" / "sha256.json"
    real = sha256_file(graph)
    assert ChecksumCache(record).sha256(graph) == real
    # The record is what the next process trusts while the stat is unchanged: it reads no bytes.
    data = json.loads(record.read_text())
    data[str(graph.resolve())][4] = "0" * 64
    record.write_text(json.dumps(data))
    assert ChecksumCache(record).sha256(graph) == "0" * 64
    graph.write_bytes(b"graph bytez")  # same size; mtime/ctime change
    assert ChecksumCache(record).sha256(graph) == sha256_file(graph) != real


# ---------------------------------------------------------------------------- read-only bundles


def _generate(bundle, image, out, *extra):
    from unprivileged import unprivileged

    cmd = [sys.executable, "-m", "runtime.generate", "--bundle", bundle, "--image", image, "--out", out,
           "--steps", "1", "--max-guidance", "1", "--generator", "splitmix", "--seed", "5", "--quiet", *extra]
    return subprocess.run(unprivileged(cmd), cwd=ROOT, capture_output=True, text=True, timeout=300)


def _read_only(path: Path):
    for p in [path, *path.rglob("*")]:
        os.chmod(p, 0o555 if p.is_dir() else 0o444)


def test_a_read_only_bundle_runs_without_the_cache_or_with_one_elsewhere(bundle, image, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    reference = _clip(bundle, image, ort_cache=False)[0]
    _read_only(bundle)
    try:
        r = _generate(bundle, image, out / "a.npy")
        assert r.returncode == 0, r.stderr
        assert not (bundle / CACHE_DIR_NAME).exists()
        elsewhere = tmp_path / "ort"
        r = _generate(bundle, image, out / "b.npy", "--ort-cache", elsewhere)
        assert r.returncode == 0, r.stderr
        assert len(_entries(elsewhere)) == 5 and (elsewhere / "sha256.json").is_file()
        r = _generate(bundle, image, out / "c.npy", "--ort-cache", elsewhere)
        assert r.returncode == 0, r.stderr
    finally:
        for p in [bundle, *bundle.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
    a, b, c = (np.load(out / f"{n}.npy") for n in "abc")
    assert np.array_equal(a, reference) and np.array_equal(b, reference) and np.array_equal(c, reference)


def test_the_cli_refuses_contradicting_cache_options(bundle, image, tmp_path):
    r = _generate(bundle, image, tmp_path / "a.npy", "--ort-cache", tmp_path / "c", "--no-ort-cache")
    assert r.returncode != 0 and "--no-ort-cache" in r.stderr and not (tmp_path / "a.npy").exists()


# ---------------------------------------------------------------------------- the C++ runtime


@pytest.fixture(scope="module")
def cpp_generate():
    if not (shutil.which("cmake") and shutil.which("g++")):
        pytest.skip("the C++ runtime needs cmake and g++ (apt-get install -y cmake g++)")
    r = subprocess.run(["bash", CPP / "scripts" / "build.sh"], capture_output=True, text=True, timeout=1200,
                       env=dict(os.environ, PYTHON=sys.executable))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    exe = CPP / "build" / "release" / "sfv-generate"
    return lambda *args: subprocess.run([str(a) for a in (exe, *args)], capture_output=True, text=True, timeout=300)


def _cpp_clip(cpp_generate, bundle, image, out):
    r = cpp_generate("--bundle", bundle, "--image", image, "--out", out, "--steps", "1", "--max-guidance", "1",
                     "--seed", "5", "--quiet")
    assert r.returncode == 0, r.stderr
    return np.load(out)


def test_cpp_uses_python_entries_and_python_uses_cpp_entries(bundle, image, cpp_generate, tmp_path):
    cache = bundle / CACHE_DIR_NAME
    plain = _cpp_clip(cpp_generate, bundle, image, tmp_path / "plain.npy")
    assert _entries(cache) and not [p for p in cache.iterdir() if p.name.startswith(".")]  # C++ wrote the entries
    cpp_entries = _entries(cache)
    _, _, hits = _clip(bundle, image)
    assert set(hits.values()) == {True}  # Python computed the same keys and used them
    shutil.rmtree(cache)
    _clip(bundle, image)  # Python writes
    python_entries = _entries(cache)
    assert python_entries == cpp_entries
    stamps = {p: (p / KEY_FILE).stat().st_mtime_ns for p in cache.iterdir() if p.is_dir()}
    cached = _cpp_clip(cpp_generate, bundle, image, tmp_path / "cached.npy")
    assert _entries(cache) == python_entries  # no entry of its own: C++ used Python's
    assert stamps == {p: (p / KEY_FILE).stat().st_mtime_ns for p in cache.iterdir() if p.is_dir()}
    assert np.array_equal(plain, cached)
