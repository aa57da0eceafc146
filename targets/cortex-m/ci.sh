#!/usr/bin/env bash
# Builds the Cortex-M firmware in release, runs it under QEMU (mps2-an386), and checks
# what it prints: it exited with success, learning raised the accuracy to at least
# MIN_ACCURACY percent (default 90), and the head reloaded from flash after the simulated
# reboot scores exactly the same. Prints the flash and RAM sizes from the ELF and the
# stack peak. Exits non-zero, saying why, on any failure.
#
#   targets/cortex-m/ci.sh            (from anywhere)
#   MIN_ACCURACY=85 targets/cortex-m/ci.sh
#
# Needs the thumbv7em-none-eabihf rustup target, qemu-system-arm, and binutils' `size`
# (or llvm-size, or readelf). scripts/setup.sh installs them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

min_accuracy="${MIN_ACCURACY:-90}"
# The firmware's budget: enforced by the link (memory.x), the firmware's stack check and
# the checks below.
flash_budget=32768
ram_budget=16384

fail() {
    echo "cortex-m ci: FAILED: $*" >&2
    exit 1
}

command -v qemu-system-arm >/dev/null ||
    fail "qemu-system-arm not found (Debian: apt-get install qemu-system-arm; or run scripts/setup.sh)"

# RUSTFLAGS from the environment replaces the rustflags of .cargo/config.toml, which
# carry cortex-m-rt's linker script: keep it.
if [[ -n "${RUSTFLAGS:-}" ]]; then
    export RUSTFLAGS="$RUSTFLAGS -C link-arg=-Tlink.x"
fi

# Build, and learn the ELF's path from cargo (wherever the target directory is).
echo "cortex-m ci: cargo build --release (thumbv7em-none-eabihf)"
build_log="$(mktemp)"
out="$(mktemp)"
trap 'rm -f "$build_log" "$out"' EXIT
if ! cargo build --release --message-format=json-render-diagnostics >"$build_log"; then
    fail "the firmware does not build (a link error 'will not fit in region' means it outgrew memory.x)"
fi
elf="$(sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' "$build_log" | tail -n 1)"
[[ -n "$elf" && -f "$elf" ]] || fail "cargo reported no firmware executable"

# Section sizes, in bytes (0 for a section the ELF lacks).
sections="$(size -A "$elf" 2>/dev/null || llvm-size -A "$elf" 2>/dev/null || true)"
section() {
    if [[ -n "$sections" ]]; then
        awk -v s="$1" '$1 == s { print $2; found = 1 } END { if (!found) print 0 }' <<<"$sections"
    else
        # readelf -S -W: [Nr] Name Type Address Off Size(hex) ...
        local hex
        hex="$(readelf -S -W "$elf" | awk -v s="$1" '{ sub(/^ *\[ *[0-9]+\] */, "") }
            $1 == s { print $5 }')"
        echo $((16#${hex:-0}))
    fi
}
vector=$(section .vector_table)
text=$(section .text)
rodata=$(section .rodata)
data=$(section .data)
bss=$(section .bss)
uninit=$(section .uninit)
flash=$((vector + text + rodata + data))
static_ram=$((data + bss + uninit))
[[ $text -gt 0 ]] || fail "could not read the section sizes of $elf"

# Run. The runner command is the one `cargo run` uses (.cargo/config.toml).
runner="$(sed -n 's/^runner = "\(.*\)"$/\1/p' .cargo/config.toml)"
[[ -n "$runner" ]] || fail "no runner in .cargo/config.toml"
echo "cortex-m ci: $runner $elf"
set +e
# shellcheck disable=SC2086 # the runner is a command line
timeout 120 $runner "$elf" | tee "$out"
status=${PIPESTATUS[0]}
set -e
[[ $status -ne 124 ]] || fail "the firmware did not finish within 120 s"
[[ $status -eq 0 ]] || fail "the firmware exited with status $status (see its output above)"
[[ "$(tail -n 1 "$out" | tr -d '\r')" == "firmware: ok" ]] ||
    fail "the firmware's last line is not 'firmware: ok'"

# `accuracy WHAT: NN.N% (k/n)` -> NN.N
percent() {
    sed -n "s/^accuracy $1: \([0-9]*\.[0-9]\)% ([0-9]*\/[0-9]*)\r\{0,1\}$/\1/p" "$out" | tail -n 1
}
before="$(percent before)"
after="$(percent after)"
reloaded="$(percent 'after reload')"
peak="$(sed -n 's/^stack peak: \([0-9]*\) bytes\r\{0,1\}$/\1/p' "$out" | tail -n 1)"
[[ -n "$before" && -n "$after" && -n "$reloaded" ]] || fail "accuracy lines missing from the output"
[[ -n "$peak" ]] || fail "'stack peak' line missing from the output"
# Tenths of a percent, as integers.
tenths() { echo $((10#${1%.*} * 10 + 10#${1#*.})); }
[[ "$reloaded" == "$after" ]] ||
    fail "accuracy after reload ($reloaded%) differs from accuracy after learning ($after%)"
[[ $(tenths "$after") -ge $((min_accuracy * 10)) ]] ||
    fail "accuracy after learning $after% is below $min_accuracy%"
[[ $(tenths "$after") -gt $(tenths "$before") ]] ||
    fail "accuracy after learning $after% is not above accuracy before $before%"
[[ $flash -le $flash_budget ]] || fail "flash $flash bytes exceeds $flash_budget"
ram=$((static_ram + peak))
[[ $ram -le $ram_budget ]] || fail "static RAM $static_ram + stack $peak = $ram bytes exceeds $ram_budget"

echo
echo "cortex-m ci: accuracy before $before%, after $after%, after reload $reloaded% (at least $min_accuracy% required)"
echo "cortex-m ci: flash $flash of $flash_budget bytes (.vector_table $vector + .text $text + .rodata $rodata + .data $data)"
echo "cortex-m ci: RAM $ram of $ram_budget bytes: static $static_ram (.data $data + .bss $bss + .uninit $uninit) + stack peak $peak"
echo "cortex-m ci: ok"
