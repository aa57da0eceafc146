#!/usr/bin/env bash
# The Linux boards, under qemu-user (issue #6): for each ARM target,
#   1. the tests of what depends on the target, run under qemu with the ARM build: the
#      libraries' tests, the integration tests of `edgetune-core` and `edgetune`
#      (persistence, flash, bundles, the backbone) but the learning-quality suite, the
#      device engine, and the device program predicting with the int8 bundle
#      (EDGETUNE_QEMU_ALL=1: every test of the three crates, as the host runs them);
#   2. parity with the host: `examples/parity.rs` computes the same embeddings (MobileNet
#      test model, f32 and int8 bundles) and learns the same heads on x86_64 and on the
#      target, and `parity compare` checks them (heads bit-identical; f32 embeddings
#      within 1e-5 relative, int8 within 1e-2: tract's ARM and x86 kernels sum and
#      rescale in another order; see the example's documentation);
#   3. on aarch64, edgetune's plan of an int8 ResNet against tract's own, bit for bit,
#      without the dot product (a Pi 4: tract's plain packing, where the host's kernel may
#      take the dot product's), with runtime/src/plan/'s own im2col
#      (`examples/plan_check.rs`; also on the host).
#
#   bash scripts/cross.sh [TARGET[:light]...]
#       (default: aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf, both in full)
#
# TARGET:light (CI's armv7, for CI's 45 minutes: a full cold armv7 build of tract is
# about 9 minutes there) runs only the core's tests under qemu (no tract: the head,
# learning's arithmetic, persistence and flash on a 32-bit target) and type-checks the
# rest, the device program and the parity example included (`cargo check`: tract-linalg's
# build script still assembles the target's kernels). Not run then: tract's armv7 kernels
# and parity with the host; run them by hand with `bash scripts/cross.sh
# armv7-unknown-linux-gnueabihf` (the README's parity table has the last results).
#
# Linkers, runners and the CPU features tract is told under qemu: .cargo/config.toml.
# scripts/setup.sh installs the cross compilers and qemu.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=${*:-aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf}
out=target/cross
mkdir -p "$out"

echo "== parity reference on the host"
# The host examples as the workspace's tests build them (with the workspace's features):
# `cargo run -p edgetune --features …` would rebuild tract with another feature set.
cargo test --workspace --no-run -q
host=target/debug/examples
"$host/arm_bundles" "$out" mobilenet resnet > "$out/reports.txt"
bundles=("$out/mobilenet-f32.bundle" "$out/mobilenet-int8.bundle")
"$host/parity" run "$out/host.json" "${bundles[@]}"
# edgetune's plan of an int8 ResNet (its im2col edgetune's: runtime/src/plan/) against
# tract's own, bit for bit; its integer products by the portable kernel where this host's
# tract packs them as a Pi 5's (x86 with VNNI).
"$host/plan_check" "$out/resnet-int8.bundle" --expect-packed --portable-products

# Appends `--test NAME` to `tests` for each integration test in the given directories but
# the learning-quality suite (runtime/core/tests/learning.rs: 90 s of qemu; the parity
# step checks that heads learned on the target are bit-identical to the host's).
add_tests() {
  local dir f name
  for dir in "$@"; do
    for f in "$dir"/*; do
      name=$(basename "${f%.rs}")
      [ "$name" = learning ] && continue
      if [ -f "$f/main.rs" ] || [[ $f == *.rs ]]; then tests+=(--test "$name"); fi
    done
  done
}

for t in $targets; do
  mode=full
  case $t in *:light) t=${t%:light} mode=light ;; esac
  # aarch64 is also the Jetson's: its build includes ONNX Runtime's CUDA and TensorRT
  # providers (compiled, not run: no GPU here; no test loads ONNX Runtime).
  case $t in
    aarch64-unknown-linux-gnu) runner="env TRACT_CPU_AARCH64_KIND=a72 qemu-aarch64 -L /usr/aarch64-linux-gnu" gpu=,cuda,tensorrt ;;
    armv7-unknown-linux-gnueabihf) runner="env TRACT_CPU_ARM32_NEON=true qemu-arm -L /usr/arm-linux-gnueabihf" gpu= ;;
    *) echo "cross: no qemu runner known for $t" >&2; exit 1 ;;
  esac
  # The core, the model side and the device program, as README "Boards" builds it:
  # without the tokenizer (`text`: pure Rust, nothing of it depends on the target, and
  # its tests run on the host; 1-2 minutes of CI's aarch64 build). EDGETUNE_QEMU_ALL=1
  # adds it, and its tests run on the target too.
  device_features="${gpu//,/,edgetune-device/}"
  [ -n "${EDGETUNE_QEMU_ALL:-}" ] && [ "$mode" = full ] && device_features="edgetune-device/text$device_features"
  crates=(-p edgetune-core -p edgetune -p edgetune-device --features "$device_features" --target "$t")
  if [ "$mode" = light ]; then
    echo "== $t, light: the core's tests under qemu (cross.sh at ${SECONDS} s)"
    tests=(--lib)
    add_tests runtime/core/tests
    cargo test -p edgetune-core --target "$t" "${tests[@]}"
    echo "== $t, light: the rest type-checked (cross.sh at ${SECONDS} s)"
    cargo check "${crates[@]}" --lib --bin edgetune --example parity
    continue
  fi
  echo "== edgetune's tests under qemu for $t (cross.sh at ${SECONDS} s)"
  if [ -n "${EDGETUNE_QEMU_ALL:-}" ]; then
    # Under emulation the crash test kills 60 times rather than 200.
    EDGETUNE_KILLS=${EDGETUNE_KILLS:-60} EDGETUNE_TEST_RUNNER="$runner" cargo test "${crates[@]}"
  else
    # What depends on the target (issues #6, #19; CI time): the code that computes, on
    # this target's instructions. The libraries' own tests; the core's and the model
    # side's integration tests (persistence, flash, bundles, the backbone) but the
    # learning-quality suite; the device engine. Not `serve`'s tests: the program's logic is the host's, and
    # qemu-user runs it on the host's kernel, so its files, sockets and power cuts
    # behave as on the host, where they are tested; the program itself runs once
    # below. EDGETUNE_QEMU_ALL=1 runs every test here; both select the same
    # crates and features, so nothing is built twice.
    tests=(--lib --test engine)
    add_tests runtime/core/tests runtime/tests
    EDGETUNE_TEST_RUNNER="$runner" cargo test "${crates[@]}" "${tests[@]}"
  fi
  if [ "$t" = aarch64-unknown-linux-gnu ]; then
    # qemu's default CPU has the dot product; a Pi 4's kernels (the pairs tiles, the
    # packings shared by paired products) are tested as a Pi 4. The same test binaries.
    echo "== the plan's tests on $t as a Pi 4, without the dot product (cross.sh at ${SECONDS} s)"
    env QEMU_CPU=cortex-a72 cargo test -q "${crates[@]}" --lib -- plan::
  fi
  # The device program and the parity example, built with the tests' crates and
  # features: any other selection (`cargo run -p edgetune --example parity`) unifies
  # other features and builds tract a second time, minutes per target.
  cargo build -q "${crates[@]}" --bin edgetune --example parity --example plan_check
  bin=${CARGO_TARGET_DIR:-target}/$t/debug
  echo "== the device program on $t (cross.sh at ${SECONDS} s)"
  # shellcheck disable=SC2086
  $runner "$bin/edgetune" predict --json "${bundles[@]:1}" \
    models/torchvision/calib/00-8.png models/torchvision/calib/01-9.png >"$out/$t-predict.json"
  n=$(grep -c '"uncertain":true' "$out/$t-predict.json" || true)
  [ "$n" = 2 ] || { cat "$out/$t-predict.json"; echo "cross: edgetune predict on $t: expected 2 predictions" >&2; exit 1; }
  if [ "$t" = aarch64-unknown-linux-gnu ]; then
    echo "== edgetune's int8 plan against tract's on $t without the dot product (cross.sh at ${SECONDS} s)"
    # shellcheck disable=SC2086
    env TRACT_DOTPROD_DISABLE=1 $runner "$bin/examples/plan_check" "$out/resnet-int8.bundle" --expect-packed --expect-products
    echo "== the same as a Pi 5, with the dot product (cross.sh at ${SECONDS} s)"
    # shellcheck disable=SC2086
    env QEMU_CPU=cortex-a76 $runner "$bin/examples/plan_check" "$out/resnet-int8.bundle" --expect-packed --expect-products
  fi
  echo "== parity of $t with the host (cross.sh at ${SECONDS} s)"
  # shellcheck disable=SC2086
  $runner "$bin/examples/parity" run "$out/$t.json" "${bundles[@]}"
  "$host/parity" compare "$out/host.json" "$out/$t.json"
done
