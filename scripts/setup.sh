#!/usr/bin/env bash
# Installs everything the tests and the demo need beyond cargo itself, idempotently, so
# that a fresh machine (or CI) needs nothing done by hand. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
targets=$(sed -n '/^targets/,/^]/p' rust-toolchain.toml | grep -o '"[a-z0-9_-]*"' | tr -d '"')

# rustfmt checks formatting in scripts/test.sh; both are tiny when already present.
for c in rustfmt clippy; do
  rustup component list --toolchain "$toolchain" --installed | grep -q "^$c" \
    || rustup component add --toolchain "$toolchain" "$c"
done

missing=""
installed=$(rustup target list --toolchain "$toolchain" --installed)
for t in $targets; do
  grep -qx "$t" <<<"$installed" || missing="$missing $t"
done
if [ -n "$missing" ]; then
  echo "setup: adding rustup targets:$missing"
  # shellcheck disable=SC2086
  rustup target add --toolchain "$toolchain" $missing
fi

# The fuzz targets (fuzz/, scripts/fuzz.sh) need a nightly for libFuzzer's coverage
# instrumentation and AddressSanitizer: a dated one, so that a run is reproducible. Only
# fuzzing uses it; the project builds with the toolchain above.
fuzz_toolchain=nightly-2026-05-19
rustup toolchain list | grep -q "^$fuzz_toolchain" \
  || rustup toolchain install "$fuzz_toolchain" --profile minimal

# Board targets (scripts/cross.sh, targets/cortex-m): cross C compilers and C libraries
# (tract-linalg assembles its ARM kernels with them; they link the device program),
# qemu-user to run the ARM Linux builds, qemu-system-arm for the Cortex-M4 firmware.
packages=""
want() { [ -e "$1" ] || command -v "$1" >/dev/null 2>&1 || packages="$packages $2"; }
want aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
want /usr/aarch64-linux-gnu/lib/libc.so.6 libc6-dev-arm64-cross
want arm-linux-gnueabihf-gcc gcc-arm-linux-gnueabihf
want /usr/arm-linux-gnueabihf/lib/libc.so.6 libc6-dev-armhf-cross
want qemu-aarch64 qemu-user
want qemu-arm qemu-user
want qemu-system-arm qemu-system-arm
# The labeling page's browser test (tests/tests/browser.rs) drives headless Chromium.
want chromium chromium
# The fleet's Flower venv (below) needs venv's pip bootstrap.
python3 -c 'import ensurepip' 2>/dev/null || packages="$packages python3-venv"
if [ -n "$packages" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "setup: installing Debian packages:$packages"
  $sudo apt-get update -q
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $packages
fi

# ONNX Runtime for the `ort` feature (parity tests, benches): the shared library from
# the PyPI wheel, unpacked to a fixed project-local path that scripts/test.sh exports as
# ORT_DYLIB_PATH. ort is built with `load-dynamic`, so nothing downloads at build time.
ort_version=1.32.0
ort_lib=target/onnxruntime/libonnxruntime.so
bash scripts/fetch-ort.sh "$ort_version" "$ort_lib"

# Flower for the fleet (fleet/, tests/tests/fleet.rs): the pinned flwr in a project venv.
# A stamp written last marks a complete install: an interrupted one is started over,
# and so is a venv of another flwr version.
flwr_version=$(sed -n 's/.*"flwr==\([0-9.]*\)".*/\1/p' fleet/pyproject.toml)
fleet_venv=target/fleet-venv
if [ ! -e "$fleet_venv/installed-flwr-$flwr_version" ]; then
  echo "setup: installing flwr $flwr_version into $fleet_venv"
  rm -rf "$fleet_venv"
  python3 -m venv "$fleet_venv" \
    || { echo "setup: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
  "$fleet_venv/bin/pip" install --quiet --disable-pip-version-check "flwr==$flwr_version"
  touch "$fleet_venv/installed-flwr-$flwr_version"
fi
