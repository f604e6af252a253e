#!/usr/bin/env bash
# Configure, build and unit-test the C++ runtime (idempotent; incremental on a second run).
#
#   runtime/cpp/scripts/build.sh                 # build/release: library, sfv-generate, ctest
#   runtime/cpp/scripts/build.sh --sanitize      # build/asan: ASan/LSan build of sfv-generate, no tests
#   runtime/cpp/scripts/build.sh --install DIR   # also install (lib, header, CMake package) into DIR
#
# PYTHON (default: python3) must import onnxruntime: its wheel's libonnxruntime is what we link.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
variant=release cmake_args=() install_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --sanitize) variant=asan; cmake_args+=(-DSFV_SANITIZE=ON -DSFV_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release) ;;
        --install) install_dir="$2"; shift ;;
        *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

"$here/scripts/fetch_deps.sh"
ort_lib="$("$python" -c 'import glob, os, onnxruntime
d = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
libs = sorted(glob.glob(os.path.join(d, "libonnxruntime.so.1*")))
print(libs[-1] if libs else "")')" || { echo "build.sh: $python cannot import onnxruntime; pip install onnxruntime (or set PYTHON)" >&2; exit 2; }
[ -n "$ort_lib" ] || { echo "build.sh: the onnxruntime wheel has no libonnxruntime.so.1*" >&2; exit 2; }

build="$here/build/$variant"
generator=()
command -v ninja >/dev/null && [ ! -f "$build/CMakeCache.txt" ] && generator=(-G Ninja)
cmake -S "$here" -B "$build" "${generator[@]}" -Wno-dev --log-level=WARNING \
    -DSFV_ONNXRUNTIME_LIBRARY="$ort_lib" -DSFV_ONNXRUNTIME_INCLUDE_DIR="$here/build/deps/onnxruntime/include" "${cmake_args[@]}"
jobs="$(nproc 2>/dev/null || echo 2)"
if [ "$variant" = asan ]; then
    cmake --build "$build" -j "$jobs" --target sfv-generate
else
    cmake --build "$build" -j "$jobs"
    ctest --test-dir "$build" --output-on-failure
fi
[ -z "$install_dir" ] || cmake --install "$build" --prefix "$install_dir" >/dev/null
echo "build.sh: $build"
