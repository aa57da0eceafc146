#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, libFuzzer with AddressSanitizer, on the pinned
# nightly toolchain that scripts/setup.sh installs) and runs each for RUNS executions
# (default 10000) from its committed seed corpus, with memory bounded at 512 MB.
#
#   scripts/fuzz.sh [RUNS] [TARGET...]   e.g. scripts/fuzz.sh 10000000 persist
#   scripts/fuzz.sh seeds                 rewrites the seed corpora fuzz/corpus/* with the
#                                         project's encoders (after a format changes)
#
# New inputs that add coverage go to target/fuzz/corpus/TARGET (not the committed
# seeds); a crash leaves its input as target/fuzz/artifacts/TARGET/crash-* and fails.
# Replay one: target/fuzz/x86_64-unknown-linux-gnu/release/TARGET FILE.
#
# EDGETUNE_FUZZ_MAX_SECONDS=S stops each target after S seconds even short of RUNS (CI
# sets it as a bound on a slow machine). The summary shows the runs each target made.
#
# EDGETUNE_FUZZ_BUILD=quick (CI) builds at opt-level 1 without debug information (in
# target/fuzz/quick): a cold build of every target in 317 s rather than 435 s here, for
# fewer executions a second, which CI's short runs can spare.
#
# EDGETUNE_FUZZ_SANITIZER=none builds without AddressSanitizer (in target/fuzz/no-sanitizer;
# same coverage guidance, corpus and checks, 3-10x the executions a second): for the
# long runs of millions of inputs. edgetune's decoders have no `unsafe`; the sanitizer
# guards what lies under them (the image and npyz crates, the std), and CI's short runs
# keep it.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10000}
max_seconds=${EDGETUNE_FUZZ_MAX_SECONDS:-0}
shift || true
toolchain=$(sed -n 's/^fuzz_toolchain=//p' scripts/setup.sh)
triple=x86_64-unknown-linux-gnu
# Outside the workspace's target directory's profiles: these flags must not mix with them.
out=${CARGO_TARGET_DIR:-$PWD/target}/fuzz
all=$(basename -s .rs fuzz/fuzz_targets/*.rs)
targets=${*:-$all}

# What cargo-fuzz passes (coverage counters, comparisons traced for libFuzzer's
# value profile, AddressSanitizer), for the target triple only: build scripts and
# proc macros stay plain.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cdebug-assertions -Coverflow-checks -Cforce-frame-pointers"
# EDGETUNE_FUZZ_TRACE_COMPARES=0 leaves the comparisons untraced (in a directory of its
# own): libFuzzer loses the operands it splices into inputs, and the target runs faster
# where comparisons are most of its time (the text target's long run: 55 % of it in the
# compare hooks, in the Unicode tables' binary searches).
case ${EDGETUNE_FUZZ_TRACE_COMPARES:-1} in
  1) suffix="" ;;
  0)
    RUSTFLAGS=${RUSTFLAGS/ -Cllvm-args=-sanitizer-coverage-trace-compares/}
    suffix=/untraced
    ;;
  *)
    echo "EDGETUNE_FUZZ_TRACE_COMPARES is 1 (the default) or 0" >&2
    exit 2
    ;;
esac
case ${EDGETUNE_FUZZ_SANITIZER:-address} in
  address)
    RUSTFLAGS="$RUSTFLAGS -Zsanitizer=address"
    export CARGO_TARGET_DIR=$out$suffix
    ;;
  none) export CARGO_TARGET_DIR=$out/no-sanitizer$suffix ;;
  *)
    echo "EDGETUNE_FUZZ_SANITIZER is address (the default) or none" >&2
    exit 2
    ;;
esac
case ${EDGETUNE_FUZZ_BUILD:-full} in
  full) ;;
  quick)
    export CARGO_TARGET_DIR=$CARGO_TARGET_DIR/quick CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
      CARGO_PROFILE_RELEASE_DEBUG=false
    ;;
  *)
    echo "EDGETUNE_FUZZ_BUILD is full (the default) or quick" >&2
    exit 2
    ;;
esac
if [ "$runs" = seeds ]; then
  # Built like the targets, so it reuses their dependencies.
  (cd fuzz && cargo "+$toolchain" run --locked --release --target "$triple" --bin seeds)
  exit
fi
# Only the heavy dependencies the chosen targets need (fuzz/Cargo.toml's features).
features=""
for t in $targets; do
  case $t in
    npy | image | text) features="$features $t" ;;
    tokenizer) features="$features text" ;;
  esac
done
echo "== fuzz: build ($toolchain)"
# shellcheck disable=SC2086
(cd fuzz && cargo "+$toolchain" build --locked --release --target "$triple" \
  --no-default-features --features "$features" $(printf -- '--bin %s ' $targets))

# AddressSanitizer keeps freed memory in quarantine to catch uses after free: 256 MB by
# default, which counts in -rss_limit_mb. The tokenizer target (it allocates and frees a
# tokenizer per input) reached 517 MB that way with 25 MB live; 64 MB of
# quarantine keeps the limit about the program's own memory.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=64}
summary=""
for t in $targets; do
  corpus=$out/corpus/$t
  artifacts=$out/artifacts/$t
  log=$out/logs/$t.log
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  echo "== fuzz: $t, $runs runs"
  # -timeout (wall-clock seconds) catches hangs. The image target decodes at most 65,536
  # pixels (edgetune::image::MAX_PIXELS under --cfg fuzzing).
  timeout=10
  start=$SECONDS
  if ! "$CARGO_TARGET_DIR/$triple/release/$t" "$corpus" "fuzz/corpus/$t" -runs="$runs" -max_total_time="$max_seconds" -rss_limit_mb=512 \
    -max_len=8192 -timeout=$timeout -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $t failed (whole log: $log; the input is in $artifacts)"
    exit 1
  fi
  # libFuzzer's last status line (`#N DONE cov: C ft: F corp: K/SIZE … exec/s: R`) and its
  # final stats: executions, coverage (edges; features), corpus, speed, memory.
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  echo "$last"
  field() { sed -n "s/.* $1: \([0-9]*\).*/\1/p" <<<"$last"; }
  stat() { sed -n "s/^stat::$1: *//p" "$log"; }
  line=$(printf '%-8s %9s runs  cov %5s  ft %6s  corpus %5s  %6s exec/s  %4s MB  %5s s' "$t" \
    "$(stat number_of_executed_units)" "$(field cov)" "$(field ft)" "$(field corp)" \
    "$(stat average_exec_per_sec)" "$(stat peak_rss_mb)" $((SECONDS - start)))
  summary+="$line"$'\n'
done
echo "== fuzz: summary (logs in $out/logs; build and runs took ${SECONDS} s)"
printf '%s' "$summary"
