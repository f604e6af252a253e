#!/usr/bin/env bash
# Fetch what the C++ runtime builds against, through the package registries, idempotently.
#
#   - nlohmann-json, stb, OpenSSL's libcrypto: Debian packages (apt-get; needs root, as in CI), skipped when present.
#   - ONNX Runtime headers: the onnxruntime wheel ships libonnxruntime.so but no headers and
#     Debian 12 has none, so the headers come from Debian 13's libonnxruntime-dev .deb, downloaded
#     with a private apt configuration (nothing is installed system-wide) and unpacked under
#     $SFV_DEPS_DIR (default runtime/cpp/build/deps). The C API is versioned: a library newer than
#     the headers (the wheel's) serves the older API version the code asks for.
#
# Prints nothing but errors and one summary line; a second run takes well under a second.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
deps="${SFV_DEPS_DIR:-$here/build/deps}"
ort_inc="$deps/onnxruntime/include"
mkdir -p "$deps"

need_apt=()
[ -f /usr/include/nlohmann/json.hpp ] || need_apt+=(nlohmann-json3-dev)
[ -f /usr/include/stb/stb_image.h ] || need_apt+=(libstb-dev)
[ -f /usr/include/openssl/evp.h ] || need_apt+=(libssl-dev)  # sha256 with the CPU's SHA extensions
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "fetch_deps: missing ${need_apt[*]}; run as root or: sudo apt-get install -y ${need_apt[*]}" >&2
        exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${need_apt[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq "${need_apt[@]}" >/dev/null; }
fi

if [ ! -f "$ort_inc/onnxruntime_cxx_api.h" ]; then
    apt_dir="$deps/apt-trixie"
    rm -rf "$apt_dir" && mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/prefs" "$apt_dir/parts"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" > "$apt_dir/sources.list"
    opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/parts"
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
          -o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$apt_dir/prefs"
          -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
    apt-get "${opts[@]}" update -qq >/dev/null
    (cd "$apt_dir" && apt-get "${opts[@]}" download -qq libonnxruntime-dev >/dev/null)
    deb="$(ls "$apt_dir"/libonnxruntime-dev_*.deb | head -1)"
    rm -rf "$apt_dir/x" && dpkg-deb -x "$deb" "$apt_dir/x"
    mkdir -p "$deps/onnxruntime"
    rm -rf "$ort_inc.tmp" && cp -r "$apt_dir/x/usr/include/onnxruntime" "$ort_inc.tmp" && mv "$ort_inc.tmp" "$ort_inc"
    basename "$deb" > "$deps/onnxruntime/SOURCE"
    rm -rf "$apt_dir"
fi
echo "fetch_deps: onnxruntime headers $ort_inc ($(cat "$deps/onnxruntime/SOURCE" 2>/dev/null || echo given))"
