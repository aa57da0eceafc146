#!/usr/bin/env bash
# ARM cost of one inference, counted on the boards' CPU models: aarch64 guest instructions
# per inference (one thread) of edgetune (tract) and ONNX Runtime, on a Pi 4 (Cortex-A72)
# and a Pi 5 (Cortex-A76), with tools/arm-count (qemu-aarch64 + tools/qemu-icount, the
# board's /proc/cpuinfo in a private mount namespace: run as root).
#
#   bash scripts/icount.sh [-k K] [-o OUT_DIR] [-b "pi4 pi5"] [-c CALIB_DIR] [MODEL...]
#
# MODEL: mobilenet_v2, resnet18 (the torchvision exports in models/torchvision; default
# both), test-mobilenet, test-resnet (the 224×224 test models of the `arm_bundles`
# example, the script's earlier subject: no QDQ form, so three rows), or a path
# DIR/NAME to DIR/NAME.onnx and its QDQ model DIR/NAME-qdq.onnx (such as the full-width
# 224×224 torchvision models models/torchvision/full_width_224.py writes, with -c its
# calibration images; -c defaults to models/torchvision/calib).
#
# Per model, the rows: edgetune's f32 bundle, its int8 bundle (`--quantize int8`,
# calibrated on models/torchvision/calib), ONNX Runtime on the f32 ONNX and on ONNX
# Runtime's own QDQ model, and that QDQ model converted to a bundle by `finetune-head
# convert`. One inference = (count with 1+K inferences − count with 1) / K, K = 4 by
# default, which removes loading. ONNX Runtime runs the whole graph, classifier included
# (one small Gemm more than the bundles, which stop at the embedding).
#
# tract's kernels on the boards: arm-count sets TRACT_CPU_AARCH64_KIND to a72 (pi4) or a75
# (pi5: tract 0.23.9 has no A76 kind, and A76's part 0xd0b alone would give "generic").
# For these cores the kind only decides fp16 and dot product (tract has core-specific
# kernels for A53 and A55 only): f32 counts are the same on both boards, and int8 uses
# SDOT on pi5 (with TRACT_DOTPROD_DISABLE=1 its count there equals pi4's).
#
# Builds: the qemu plugin, host `finetune-head` (the bundles), the aarch64 `embed` and
# `ort_embed` examples; fetches ONNX Runtime's aarch64 library from its PyPI wheel (the
# version scripts/setup.sh takes for x86) into target/onnxruntime-aarch64/. Writes the
# bundles, conversion reports (reports.txt) and raw counts (counts.tsv) to OUT_DIR
# (default target/icount); prints one markdown table per model. A benchmark, run by hand:
# the full run takes minutes under qemu, not CI's time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
k=4
out=target/icount
boards="pi4 pi5"
calib=models/torchvision/calib
while getopts k:o:b:c: opt; do
  case $opt in
    k) k=$OPTARG ;;
    o) out=$OPTARG ;;
    b) boards=$OPTARG ;;
    c) calib=$OPTARG ;;
    *) echo "usage: bash scripts/icount.sh [-k K] [-o OUT_DIR] [-b \"pi4 pi5\"] [-c CALIB_DIR] [MODEL...]" >&2; exit 2 ;;
  esac
done
[ -d "$calib" ] || { echo "icount: no calibration folder $calib" >&2; exit 2; }
calib=$(cd "$calib" && pwd)
shift $((OPTIND - 1))
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(mobilenet_v2 resnet18)
for i in "${!models[@]}"; do
  m=${models[$i]}
  case $m in
    mobilenet_v2 | resnet18 | test-mobilenet | test-resnet) ;;
    */*)
      for f in "$m.onnx" "$m-qdq.onnx"; do
        [ -f "$f" ] || { echo "icount: model $m: no $f" >&2; exit 2; }
      done
      models[$i]=$(cd "$(dirname "$m")" && pwd)/$(basename "$m") ;;
    *) echo "icount: unknown model $m (mobilenet_v2, resnet18, test-mobilenet, test-resnet, or DIR/NAME)" >&2; exit 2 ;;
  esac
done
[[ $k =~ ^[1-9][0-9]*$ ]] || { echo "icount: -k takes a positive count, got $k" >&2; exit 2; }
for b in $boards; do
  case $b in pi4 | pi5) ;; *) echo "icount: unknown board $b (pi4, pi5)" >&2; exit 2 ;; esac
done
# shellcheck source=scripts/arm-common.sh
. scripts/arm-common.sh
arm_prerequisites icount gcc qemu-aarch64 aarch64-linux-gnu-gcc unshare python3
mkdir -p "$out"
out=$(cd "$out" && pwd)
target=${CARGO_TARGET_DIR:-$root/target}

# ONNX Runtime for aarch64: the library from the PyPI wheel, as scripts/setup.sh does for x86.
ort_version=$(sed -n 's/^ort_version=//p' scripts/setup.sh)
[ -n "$ort_version" ] || { echo "icount: no ort_version= in scripts/setup.sh" >&2; exit 1; }
ort_lib=$root/target/onnxruntime-aarch64/libonnxruntime.so
bash scripts/fetch-ort.sh "$ort_version" "$ort_lib" aarch64

# The plugin, built from the repository's copy every run (arm-count would reuse one).
gcc -shared -fPIC -O2 -o "$out/libicount.so" tools/qemu-icount/icount.c
export ARM_COUNT_DIR=$out

echo "icount: building finetune-head (host) and the aarch64 examples embed, ort_embed" >&2
cargo build --release -q -p finetune-head
arm_build_examples
fh=$target/release/finetune-head
embed=$target/aarch64-unknown-linux-gnu/release/examples/embed
ort_embed=$target/aarch64-unknown-linux-gnu/release/examples/ort_embed

# Bundles. The torchvision exports: preprocessing of models/torchvision/README.md.
tv=models/torchvision
pre=(--scale 0.00392157 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)
: > "$out/reports.txt"
convert() { # NAME ARGS...: one bundle, its report appended to reports.txt
  local name=$1; shift
  echo "== $out/$name.bundle" >> "$out/reports.txt"
  "$fh" convert "$@" -o "$out/$name.bundle" >> "$out/reports.txt" 2>&1 \
    || { echo "icount: finetune-head convert for $name failed (see $out/reports.txt)" >&2; exit 1; }
  echo >> "$out/reports.txt"
}
tests=()
for i in "${!models[@]}"; do
  m=${models[$i]}
  case $m in
    mobilenet_v2) src=$tv/mobilenet_v2-w025-64 ;;
    resnet18) src=$tv/resnet18-w8-64 ;;
    test-*) tests+=("${m#test-}"); continue ;;
    */*) src=$m; m=$(basename "$m"); models[$i]=$m ;;
  esac
  convert "$m-f32" "$src.onnx" "${pre[@]}"
  convert "$m-int8" "$src.onnx" "${pre[@]}" --quantize int8 --calib "$calib"
  convert "$m-qdq" "$src-qdq.onnx" "${pre[@]}"
  cp "$src.onnx" "$out/$m.onnx"
  cp "$src-qdq.onnx" "$out/$m-qdq.onnx"
done
if [ ${#tests[@]} -gt 0 ]; then
  # Writes OUT/{mobilenet,resnet}.onnx and -f32/-int8 bundles.
  cargo run --release -q -p finetune-head --example arm_bundles -- "$out/tmp-test" "${tests[@]}" \
    >> "$out/reports.txt"
  for t in "${tests[@]}"; do
    mv "$out/tmp-test/$t.onnx" "$out/test-$t.onnx"
    mv "$out/tmp-test/$t-f32.bundle" "$out/test-$t-f32.bundle"
    mv "$out/tmp-test/$t-int8.bundle" "$out/test-$t-int8.bundle"
    sed -i "s|^== $out/tmp-test/$t-|== $out/test-$t-|" "$out/reports.txt"
  done
  rmdir "$out/tmp-test" 2>/dev/null || true
fi

# The size column: a bundle's backbone section (its NNEF, from the conversion report; the
# file also has the manifest, with embedding statistics when calibrated), an ONNX file's size.
size() {
  case $1 in
    *.onnx) stat -c %s "$1" ;;
    *) awk -v h="== $1" '$0 == h { on = 1; next } /^== / { on = 0 }
         on && /^backbone .* bytes NNEF/ { for (i = 1; i < NF; i++) if ($(i + 1) == "bytes") { print $i; exit } }' \
         "$out/reports.txt" ;;
  esac
}

# count BOARD PROGRAM ARG N: instructions of one run, or "fail" (reason on stderr).
count() {
  local n rc
  n=$(ORT_DYLIB_PATH=$ort_lib tools/arm-count/arm-count "$1" "$2" "$3" "$4") && rc=0 || rc=$?
  if [ "$rc" = 0 ] && [[ $n =~ ^[0-9]+$ ]]; then
    echo "$n"
  else
    # arm-count keeps only the count, not the program's messages.
    echo "icount: $1 $(basename "$2") $(basename "$3") $4 failed (exit $rc, count ${n:-none})" >&2
    echo fail
  fi
}
# per BOARD PROGRAM ARG: instructions of one inference, or "fail".
per() {
  local t0 one more
  t0=$(date +%s)
  one=$(count "$1" "$2" "$3" 1)
  more=$(count "$1" "$2" "$3" $((1 + k)))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$(basename "$2")" "$(basename "$3")" "$k" "$one" "$more" \
    "$(($(date +%s) - t0))" >> "$out/counts.tsv"
  echo "icount: $1 $(basename "$2") $(basename "$3"): 1 → $one, $((1 + k)) → $more ($(($(date +%s) - t0)) s)" >&2
  if [ "$one" = fail ] || [ "$more" = fail ]; then echo fail; else echo $(((more - one) / k)); fi
}

: > "$out/tables.md"
printf 'board\tprogram\tinput\tk\tcount_1\tcount_1+k\tseconds\n' > "$out/counts.tsv"
started=$(date +%s)
for m in "${models[@]}"; do
  # rows: label, program, input file
  rows=("edgetune f32 bundle|$embed|$out/$m-f32.bundle"
    "edgetune int8 bundle (--quantize int8)|$embed|$out/$m-int8.bundle"
    "ONNX Runtime $ort_version f32|$ort_embed|$out/$m.onnx")
  case $m in
    test-*) ;;
    *) rows+=("ONNX Runtime $ort_version QDQ int8|$ort_embed|$out/$m-qdq.onnx"
      "that QDQ model converted to a bundle|$embed|$out/$m-qdq.bundle") ;;
  esac
  declare -A cost=() bytes=()
  for row in "${rows[@]}"; do
    IFS='|' read -r label prog file <<< "$row"
    bytes[$label]=$(size "$file")
    [ -n "${bytes[$label]}" ] || { echo "icount: no backbone size for $file in $out/reports.txt" >&2; exit 1; }
    for b in $boards; do cost[$label/$b]=$(per "$b" "$prog" "$file"); done
  done
  {
    echo
    printf '| one inference, %s (1 thread) |' "$m"
    for b in $boards; do case $b in pi4) printf ' Pi 4 (A72) |' ;; pi5) printf ' Pi 5 (A76) |' ;; esac; done
    printf ' bytes (backbone NNEF, ONNX file) |\n| --- |'
    for b in $boards; do printf ' ---: |'; done
    printf ' ---: |\n'
    for row in "${rows[@]}"; do
      IFS='|' read -r label _ _ <<< "$row"
      printf '| %s |' "$label"
      for b in $boards; do
        c=${cost[$label/$b]}
        if [ "$c" = fail ]; then printf ' fails |'; else awk -v c="$c" 'BEGIN { printf " %.2f M |", c / 1e6 }'; fi
      done
      printf ' %s |\n' "${bytes[$label]}"
    done
    ratio() { # LABEL NUMERATOR DENOMINATOR
      [ -n "${bytes[$2]:-}" ] && [ -n "${bytes[$3]:-}" ] || return 0
      printf '| %s |' "$1"
      for b in $boards; do
        local x=${cost[$2/$b]} y=${cost[$3/$b]}
        if [ "$x" = fail ] || [ "$y" = fail ]; then printf ' – |'; else awk -v x="$x" -v y="$y" 'BEGIN { printf " %.2f× |", x / y }'; fi
      done
      awk -v x="${bytes[$2]}" -v y="${bytes[$3]}" 'BEGIN { printf " %.2f× |\n", x / y }'
    }
    f32="edgetune f32 bundle" int8="edgetune int8 bundle (--quantize int8)"
    of32="ONNX Runtime $ort_version f32" oint8="ONNX Runtime $ort_version QDQ int8"
    ratio "edgetune int8 / edgetune f32" "$int8" "$f32"
    ratio "ONNX Runtime int8 / ONNX Runtime f32" "$oint8" "$of32"
    ratio "edgetune int8 / ONNX Runtime int8" "$int8" "$oint8"
    ratio "edgetune f32 / ONNX Runtime f32" "$f32" "$of32"
    ratio "QDQ bundle / edgetune int8" "that QDQ model converted to a bundle" "$int8"
  } | tee -a "$out/tables.md"
  unset cost bytes
done
echo >&2
echo "icount: $(($(date +%s) - started)) s of counting (K = $k); counts: $out/counts.tsv, conversion reports: $out/reports.txt" >&2
