#!/usr/bin/env bash
# The one command that runs every test (README; .ci/run calls it as is).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's wall time, printed as a table at the end (also when a step fails): CI
# has a 45-minute budget and this is where it goes.
times="" step_name="" step_start=$SECONDS
step() {
  if [ -n "$step_name" ]; then
    times+=$(printf '%6d s  %s' $((SECONDS - step_start)) "$step_name")$'\n'
  fi
  step_name=$1 step_start=$SECONDS
  [ -n "$1" ] && echo "== $1"
  return 0
}
report() {
  step ""
  echo "== time by step (total $((SECONDS / 60)) min $((SECONDS % 60)) s)"
  printf '%s' "$times"
}
trap report EXIT

step "setup"
bash scripts/setup.sh
# The `ort` feature's tests and benches load ONNX Runtime from here (setup.sh puts it there).
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/target/onnxruntime/libonnxruntime.so}"

step "format"
cargo fmt --all --check
(cd targets/no-alloc-check && cargo fmt --check)
(cd targets/cortex-m && cargo fmt --check)

# The fuzz crate (outside the workspace) builds with --locked on the workspace's path
# crates: a dependency added to them must reach fuzz/Cargo.lock too. Checked here, in
# seconds, rather than when the fuzz targets build at the end.
step "fuzz/Cargo.lock up to date"
fuzz_toolchain=$(sed -n 's/^fuzz_toolchain=//p' scripts/setup.sh)
(cd fuzz && cargo "+$fuzz_toolchain" metadata --locked --format-version 1 >/dev/null) || {
  echo "fuzz/Cargo.lock is out of date: cp Cargo.lock fuzz/ && (cd fuzz && cargo +$fuzz_toolchain metadata --format-version 1 >/dev/null), then commit it" >&2
  exit 1
}

# The no_std core must build for the smallest Cortex-M cores with no allocator at all:
# targets/no-alloc-check links a no_main binary without a global allocator, which fails
# to link if anything in the head's dependency tree touches `alloc`.
for t in thumbv6m-none-eabi thumbv7em-none-eabihf; do
  step "build edgetune-core (no_std) for $t"
  cargo build -p edgetune-core --target "$t"
  (cd targets/no-alloc-check && cargo build --release --target "$t")
done

step "logging back ends (never both at once)"
cargo check -p edgetune-core --features log
cargo check -p edgetune-core --features defmt --target thumbv7em-none-eabihf

step "workspace tests"
cargo test --workspace

# The fleet again with gradient learners: FedAvg of the devices' heads, weighted by labels
# per class, instead of summed statistics (issue #15). --workspace keeps the features the
# workspace build unified, so nothing is built again.
step "fleet with gradient learners (Flower, FedAvg)"
EDGETUNE_FLEET_LEARNER=gradient cargo test --workspace --test fleet -- three_devices

# `serve` for 60 s on its socket with every kind of request: memory flat, no descriptor
# leak, state files within --keep, every acknowledged label kept (scripts/soak.sh 3600
# for an hour).
step "soak: serve for 60 s"
bash scripts/soak.sh 60

# Coverage-guided fuzzing, briefly, of every decoder (fuzz/; none needs tract). It ends
# with a line per target: executions, coverage, executions per second. At most 20 s a
# target, a bound for a slow machine (each takes a few seconds here but image and text).
# The quick build (opt-level 1, no debug information) saves 2 of its 7 minutes.
step "fuzz: every target, 10000 runs or 20 s each"
EDGETUNE_FUZZ_BUILD=quick EDGETUNE_FUZZ_MAX_SECONDS=20 bash scripts/fuzz.sh 10000

# The boards (issue #6): the tests of what computes on the target under qemu-user for
# aarch64 (Pi 3/4/5, Jetson; with the Jetson's CUDA/TensorRT providers compiled in), and
# parity of its embeddings and learned heads with this host's; for armv7 (Pi 2/3) the
# core's tests under qemu and the rest type-checked (cross.sh's `:light`: a second cold
# build of tract does not fit CI's 45 minutes; `bash scripts/cross.sh` runs both in full).
step "boards: ARM Linux under qemu"
bash scripts/cross.sh aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf:light

# The Cortex-M4 firmware under qemu-system-arm: learns, persists, reloads; checks the
# printed accuracy and a clean exit.
step "boards: Cortex-M firmware under qemu-system-arm"
bash targets/cortex-m/ci.sh
