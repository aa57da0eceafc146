#!/usr/bin/env bash
# The Linux boards, under qemu-user (issue #6): for each ARM target,
#   1. the tests of what depends on the target, run under qemu with the ARM build: every
#      test of `edgetune-core` and `edgetune` (head, learning, persistence, flash,
#      bundles, the backbone), the device engine, and of `edgetune serve` end to end the
#      power cuts, learning and allocations (EDGETUNE_QEMU_ALL=1: every test of the three
#      crates, as the host runs them);
#   2. parity with the host: `examples/parity.rs` computes the same embeddings (MobileNet
#      test model, f32 and int8 bundles) and learns the same heads on x86_64 and on the
#      target, and `parity compare` checks them (heads bit-identical; f32 embeddings
#      within 1e-5 relative, int8 within 1e-2: tract's ARM and x86 kernels sum and
#      rescale in another order; see the example's documentation).
#
#   bash scripts/cross.sh [TARGET...]   (default: aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
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
"$host/arm_bundles" "$out" mobilenet > "$out/reports.txt"
bundles=("$out/mobilenet-f32.bundle" "$out/mobilenet-int8.bundle")
"$host/parity" run "$out/host.json" "${bundles[@]}"

for t in $targets; do
  # aarch64 is also the Jetson's: its build includes ONNX Runtime's CUDA and TensorRT
  # providers (compiled, not run: no GPU here; no test loads ONNX Runtime).
  case $t in
    aarch64-unknown-linux-gnu) runner="qemu-aarch64 -L /usr/aarch64-linux-gnu" gpu=,cuda,tensorrt ;;
    armv7-unknown-linux-gnueabihf) runner="qemu-arm -L /usr/arm-linux-gnueabihf" gpu= ;;
    *) echo "cross: no qemu runner known for $t" >&2; exit 1 ;;
  esac
  echo "== edgetune's tests under qemu for $t"
  # The serve tests start the binary themselves: it needs the same emulator. Under
  # emulation the crash test kills 60 times rather than 200 (CI time; the host run
  # keeps 200, and EDGETUNE_KILLS overrides).
  # The core, the model side and the device program; the parity example gets edgetune's
  # features as that test build has them (no rebuild of edgetune in between).
  device_features="${gpu//,/,edgetune-device/}"
  device_features="${device_features#,}"
  crates=(-p edgetune-core -p edgetune -p edgetune-device --features "$device_features" --target "$t")
  if [ -n "${EDGETUNE_QEMU_ALL:-}" ]; then
    EDGETUNE_KILLS=${EDGETUNE_KILLS:-60} EDGETUNE_TEST_RUNNER="$runner" cargo test "${crates[@]}"
  else
    # What depends on the target (issue #19): the core's and the model side's tests
    # (learning, persistence, flash, bundles, the backbone) and the device engine; of
    # `serve`, the power cuts, learning and allocations. The rest of `serve` (requests,
    # sources, admin, …) is the same program logic as on the host and runs there;
    # EDGETUNE_QEMU_ALL=1 runs every test here too. Both runs select the same crates and
    # features, so nothing is built twice.
    tests=(--lib --test engine)
    for f in runtime/core/tests/* runtime/tests/*; do
      if [ -f "$f/main.rs" ] || [[ $f == *.rs ]]; then tests+=(--test "$(basename "${f%.rs}")"); fi
    done
    EDGETUNE_TEST_RUNNER="$runner" cargo test "${crates[@]}" "${tests[@]}"
    EDGETUNE_KILLS=${EDGETUNE_KILLS:-60} EDGETUNE_TEST_RUNNER="$runner" \
      cargo test "${crates[@]}" --test serve -- power_cuts:: learning:: allocations::
  fi
  echo "== parity of $t with the host"
  cargo run -q -p edgetune --features "std,tract,image,npy,log$gpu" --target "$t" \
    --example parity -- run "$out/$t.json" "${bundles[@]}"
  "$host/parity" compare "$out/host.json" "$out/$t.json"
done
