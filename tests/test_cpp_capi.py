"""The C API of the C++ runtime (runtime/cpp/include/sfv/sfv.h): the header is C11, the shared
library exports only sfv_* with a real SOVERSION, a C program built with a C compiler against the
installed package makes clips in one batch with progress and cancels, one runtime serves several
threads with the same clips as one thread, ONNX Runtime's failures come back as the backend-error
status, and Ctrl-C cancels sfv-generate without writing anything.

Uses the release build of tests/test_cpp_runtime.py (runtime/cpp/scripts/build.sh).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_cpp_runtime import CPP, _python_error, _run, cpp_build, generate, image  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(not shutil.which("cc"), reason="the C API tests need a C compiler (cc)")

HEADER = CPP / "include" / "sfv" / "sfv.h"


def _header_version() -> tuple[int, int, int]:
    text = HEADER.read_text()
    return tuple(int(re.search(rf"#define SFV_VERSION_{k} (\d+)", text).group(1)) for k in ("MAJOR", "MINOR", "PATCH"))


def test_header_compiles_as_c11(tmp_path):
    src = tmp_path / "use.c"
    src.write_text('#include <sfv/sfv.h>\nint main(void) { sfv_status s = SFV_STATUS_CANCELLED; return (int)s - 4; }\n')
    r = _run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I", CPP / "include", "-fsyntax-only", src])
    assert r.returncode == 0, r.stderr


def test_shared_library_exports_only_the_c_api(cpp_build):
    major, minor, patch = _header_version()
    lib = cpp_build[0] / f"libsfv_runtime.so.{major}.{minor}.{patch}"
    assert lib.is_file(), sorted(p.name for p in cpp_build[0].glob("libsfv_runtime*"))
    r = _run(["nm", "-D", "--defined-only", lib])
    assert r.returncode == 0, r.stderr
    names = [line.split()[-1] for line in r.stdout.splitlines() if line.strip()]
    assert "sfv_generate" in names and "sfv_last_error" in names
    assert [n for n in names if not n.startswith("sfv_")] == []
    declared = set(re.findall(r"SFV_API [^;]*?\b(sfv_\w+)\(", HEADER.read_text()))
    assert declared == set(names)  # every declared function is exported, nothing else
    r = _run(["readelf", "-d", lib])
    assert f"[libsfv_runtime.so.{major}]" in r.stdout, r.stdout


def test_c_program_against_the_installed_package(cpp_build, tiny_bundle, tmp_path):
    """examples/c/sfv_example.c, built with `cc -std=c11 -Werror` against `cmake --install`'s
    prefix: two clips in one call (seeds 7 and 8), progress per stage and step, a cancel, an error."""
    prefix = tmp_path / "prefix"
    r = _run(["cmake", "--install", cpp_build[0], "--prefix", prefix])
    assert r.returncode == 0, r.stderr
    exe = tmp_path / "sfv_example"
    r = _run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", CPP / "examples" / "c" / "sfv_example.c", "-I", prefix / "include",
              "-L", prefix / "lib", "-lsfv_runtime", f"-Wl,-rpath,{prefix / 'lib'}", "-o", exe])
    assert r.returncode == 0, r.stderr

    r = _run([exe, tiny_bundle, "2"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == "sfv_runtime {}.{}.{}".format(*_header_version())
    events = [line.split()[1:3] for line in r.stdout.splitlines() if line.startswith("progress ")]
    assert events == [["preprocess", "1/2"], ["preprocess", "2/2"], ["image_encoder", "1/2"], ["image_encoder", "2/2"],
                      ["vae_encoder", "1/2"], ["vae_encoder", "2/2"], ["unet", "1/1"], ["vae_decoder", "1/2"], ["vae_decoder", "2/2"]]
    assert "latents [2, " in r.stdout  # the UNet step reports the whole batch's latents
    sums = re.findall(r"clip \d: (\d+) frames \d+x\d+, rgb sum (\d+)", r.stdout)
    assert len(sums) == 2 and sums[0][1] != sums[1][1]  # per-image seeds: two different clips

    r = _run([exe, tiny_bundle, "2", "--cancel-at", "unet:1"])
    assert r.returncode == 3, r.stdout + r.stderr
    assert "(SFV_STATUS_CANCELLED)" in r.stderr and "clip 0" not in r.stdout

    from contract.bundle import Bundle

    missing = tmp_path / "no-such-bundle"
    r = _run([exe, missing])
    assert r.returncode == 2
    # the last-error message is the text of the C++ runtime's (and Python's) exception
    assert r.stderr.strip() == f"error: {_python_error(lambda: Bundle.load(missing))} (SFV_STATUS_BUNDLE_ERROR)"


def test_one_runtime_serves_threads_and_batches(cpp_build, tiny_bundle):
    """tests/threads_check.cpp: 4 threads x 2 rounds on one opened runtime give byte-identical clips
    to one thread's; one call of 4 images (one UNet batch) equals 4 single calls (latents within
    1e-5, frames within 1 level; its exit status says so)."""
    r = _run([cpp_build[0] / "sfv_threads_check", tiny_bundle, "4", "2"], timeout=300)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 clips differ" in r.stdout


@pytest.fixture
def failing_unet_bundle(tiny_bundle, tmp_path):
    """The tiny bundle with a UNet of the right signature whose output (a Reshape of the sample into
    rows of 7) never has the shape the sampler needs: a failure inside ONNX Runtime's Run."""
    import onnx
    from onnx import TensorProto, helper

    root = tmp_path / "bad-unet"
    shutil.copytree(tiny_bundle, root)
    manifest = json.loads((root / "manifest.json").read_text())
    net = manifest["networks"]["unet"]
    ins = [helper.make_tensor_value_info(t["name"], TensorProto.FLOAT, [d if isinstance(d, int) else None for d in t["shape"]])
           for t in net["inputs"]]
    out = net["outputs"][0]["name"]
    rows = helper.make_tensor("rows", TensorProto.INT64, [5], [-1, 7, 1, 1, 1])
    graph = helper.make_graph([helper.make_node("Reshape", ["sample", "rows"], [out])], "bad_unet", ins,
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], initializer=[rows])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = root / net["variants"]["fp32"]["file"]
    onnx.save(model, path)
    net["variants"]["fp32"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_onnx_runtime_failure_is_a_backend_error(generate, failing_unet_bundle, image, tmp_path):
    """Ort::Exception from a run becomes the library's backend error (sfv-generate: one error line, exit 2)."""
    out = tmp_path / "clip.npy"
    r = generate("--bundle", failing_unet_bundle, "--image", image, "--out", out, "--frames", "3", "--steps", "1", "--max-guidance", "1")
    assert r.returncode == 2, r.stderr
    last = r.stderr.splitlines()[-1]  # after the progress line of the stages that ran
    assert last.startswith("error: ONNX Runtime failed running ") and "unet.onnx: " in last, r.stderr
    assert not out.exists()


def test_ctrl_c_cancels_sfv_generate_and_writes_nothing(cpp_build, tiny_bundle, image, tmp_path):
    out = tmp_path / "clip.npy"
    proc = subprocess.Popen([str(cpp_build[0] / "sfv-generate"), "--bundle", str(tiny_bundle), "--image", str(image), "--out", str(out),
                             "--frames", "3", "--steps", "100000", "--max-guidance", "1"], stderr=subprocess.PIPE)
    seen, deadline = b"", time.monotonic() + 120
    while b"unet 2/" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.read1(256)  # progress lines (one per step) show the loop is running
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    stderr = (seen + rest).decode()
    assert proc.returncode == 130, stderr[-2000:]
    assert "error: cancelled by the progress callback at unet step" in stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
