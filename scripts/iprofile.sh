#!/usr/bin/env bash
# Where one inference's aarch64 instructions go, per function, on a board's CPU model: the
# per-op profile behind the counts of scripts/icount.sh (issue #14 asks for it on the
# board model wherever a target is missed).
#
#   bash scripts/iprofile.sh [-k K] [-b pi4|pi5] [-n TOP] [-o OUT_DIR] BUNDLE...
#
# Runs the aarch64 `embed` example on BUNDLE with 1 and with 1+K inferences (K = 4) under
# tools/arm-count with ARM_COUNT_PROFILE (tools/qemu-icount/profile.c counts the
# instructions of every translated block), maps each block to the function of the `embed`
# binary it lies in (its symbols, at the address qemu loaded it), and prints per function
# the instructions of one inference ((count with 1+K − count with 1) / K) and their
# share, TOP (25) functions. Blocks outside the binary (libc's memcpy and memset, the
# dynamic loader) are one row. Inlined code counts in the function it was inlined into:
# tract's element-wise loops show as the op's `eval`, its matrix kernels (assembly) by
# their own names. Needs root (tools/arm-count); builds the example as icount.sh does
# (scripts/arm-common.sh), so the two share the build. A benchmark, run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
k=4
board=pi5
top=25
out=target/iprofile
while getopts k:b:n:o: opt; do
  case $opt in
    k) k=$OPTARG ;;
    b) board=$OPTARG ;;
    n) top=$OPTARG ;;
    o) out=$OPTARG ;;
    *) echo "usage: bash scripts/iprofile.sh [-k K] [-b pi4|pi5] [-n TOP] [-o OUT_DIR] BUNDLE..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "usage: bash scripts/iprofile.sh [-k K] [-b pi4|pi5] [-n TOP] [-o OUT_DIR] BUNDLE..." >&2; exit 2; }
[[ $k =~ ^[1-9][0-9]*$ ]] || { echo "iprofile: -k takes a positive count, got $k" >&2; exit 2; }
[[ $top =~ ^[1-9][0-9]*$ ]] || { echo "iprofile: -n takes a positive count, got $top" >&2; exit 2; }
case $board in pi4 | pi5) ;; *) echo "iprofile: unknown board $board (pi4, pi5)" >&2; exit 2 ;; esac
for b in "$@"; do [ -f "$b" ] || { echo "iprofile: no bundle at $b" >&2; exit 2; }; done
# shellcheck source=scripts/arm-common.sh
. scripts/arm-common.sh
arm_prerequisites iprofile gcc qemu-aarch64 aarch64-linux-gnu-nm aarch64-linux-gnu-readelf unshare python3
mkdir -p "$out"
out=$(cd "$out" && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
echo "iprofile: building the aarch64 example embed" >&2
arm_build_examples
embed=$target/aarch64-unknown-linux-gnu/release/examples/embed
# The profiler, built from the repository's copy every run (arm-count would reuse one).
gcc -shared -fPIC -O2 -o "$out/libprofile.so" tools/qemu-icount/profile.c
export ARM_COUNT_DIR=$out
aarch64-linux-gnu-nm -C -n --defined-only "$embed" > "$out/embed.syms"
# The lowest address the binary asks to be loaded at (0 for a position-independent one).
first_load=$(aarch64-linux-gnu-readelf -lW "$embed" | awk '$1 == "LOAD" { print $3; exit }')

for bundle in "$@"; do
  name=$(basename "$bundle" .bundle)
  for n in 1 $((1 + k)); do
    ARM_COUNT_PROFILE=$out/$name-$board-$n.blocks tools/arm-count/arm-count "$board" "$embed" "$bundle" "$n" \
      > "$out/$name-$board-$n.total"
  done
  echo
  echo "### $name, one inference on $board (K = $k)"
  echo
  python3 - "$out/embed.syms" "$first_load" "$k" "$top" \
    "$out/$name-$board-1.blocks" "$out/$name-$board-$((1 + k)).blocks" <<'EOF'
import bisect, re, sys

syms_path, first_load, k, top, one, more = sys.argv[1:]
k, top, first_load = int(k), int(top), int(first_load, 16)
addrs, names = [], []
for line in open(syms_path):
    parts = line.rstrip("\n").split(" ", 2)
    if len(parts) == 3 and parts[1] in "tTwW":
        addrs.append(int(parts[0], 16))
        names.append(re.sub(r"::h[0-9a-f]{16}$", "", parts[2]))

def where(log):
    code = {}
    for line in open(log):
        m = re.match(r"(start_code|end_code)\s+0x([0-9a-f]+)", line)
        if m:
            code[m.group(1)] = int(m.group(2), 16)
    return code["start_code"], code["end_code"]

OUTSIDE = "(outside the program: libc's memcpy/memset, the dynamic loader)"

def profile(blocks):
    start, end = where(blocks + ".log")
    bias = start - first_load
    per = {}
    for line in open(blocks):
        vaddr, insns, runs = line.split()
        vaddr, n = int(vaddr, 16), int(insns) * int(runs)
        if start <= vaddr < end:
            i = bisect.bisect_right(addrs, vaddr - bias) - 1
            name = names[i] if i >= 0 else OUTSIDE
        else:
            name = OUTSIDE
        per[name] = per.get(name, 0) + n
    return per

a, b = profile(one), profile(more)
rows = {f: (b.get(f, 0) - a.get(f, 0)) / k for f in set(a) | set(b)}
total = sum(rows.values())
print(f"{total / 1e6:.2f} M instructions per inference")
print()
print("| instructions | share | function |")
print("| ---: | ---: | --- |")
shown = 0.0
for f, n in sorted(rows.items(), key=lambda r: -r[1])[:top]:
    shown += n
    f = f if len(f) <= 140 else f[:137] + "..."
    print(f"| {n / 1e6:.3f} M | {100 * n / total:.1f} % | `{f}` |")
print(f"| {(total - shown) / 1e6:.3f} M | {100 * (total - shown) / total:.1f} % | (the rest) |")
EOF
done
