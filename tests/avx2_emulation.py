"""Run a Python process with AVX-512 hidden from CPUID, so that ONNX Runtime (MLAS) and OpenVINO
(oneDNN) dispatch the kernels they use on AVX2-only CPUs (AMD Zen 2/3, Intel client CPUs).

``qemu-x86_64 -cpu Haswell`` (Debian's ``qemu-user``) translates every instruction, so the child
is 10-100x slower: tests that use it are marked ``avx2emu`` and run with ``-m avx2emu``. On a
machine that is AVX2-only already the child runs natively (the same kernels, much faster).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

# Haswell is AVX2 + FMA without AVX-512 or VNNI. The features switched off are ones TCG cannot
# emulate; leaving them on only prints a warning per thread.
QEMU_CPU = "Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm"


def host_has_avx512() -> bool:
    from contract.environment import cpu_flags

    return "avx512f" in cpu_flags()


def avx2_command(args: list[str]) -> list[str]:
    """``[python, *args]`` as a command that sees an AVX2-only CPU; skips the test without qemu."""
    if not host_has_avx512():
        return [sys.executable, *args]
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 is not installed (apt-get install qemu-user): cannot hide AVX-512 here")
    return [qemu, "-cpu", QEMU_CPU, sys.executable, *args]


def run_as_avx2(args: list[str], timeout: float = 1800, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python *args`` on an (emulated) AVX2-only CPU; raises with its output when it fails."""
    env = {**os.environ, **kwargs.pop("env", {})}
    proc = subprocess.run(avx2_command(args), capture_output=True, text=True, timeout=timeout, env=env, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(f"AVX2 child failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc
