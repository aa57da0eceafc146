#!/usr/bin/env bash
# ARM cost of the backbones, counted: aarch64 guest instructions per inference of the
# 224×224 MobileNet-style and ResNet-style test models, f32 against int8, under
# qemu-aarch64 (tools/qemu-icount). Also prints each bundle's size.
#
#   bash scripts/icount.sh [OUT_DIR]      (default target/icount)
#
# One inference = (count with 3 inferences - count with 1) / 2, which removes loading.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/icount}
mkdir -p "$out"
for tool in gcc qemu-aarch64 aarch64-linux-gnu-gcc; do
  command -v "$tool" >/dev/null || { echo "icount: $tool is missing (apt-get install gcc qemu-user gcc-aarch64-linux-gnu)" >&2; exit 1; }
done
gcc -shared -fPIC -O2 -o "$out/libicount.so" tools/qemu-icount/icount.c
cargo run --release -q -p finetune-head --example arm_bundles -- "$out" > "$out/reports.txt"
cargo build --release -q -p edgetune --features tract --example embed --target aarch64-unknown-linux-gnu
bin=target/aarch64-unknown-linux-gnu/release/examples/embed

count() {
  qemu-aarch64 -plugin "$out/libicount.so" -d plugin -L /usr/aarch64-linux-gnu "$bin" "$1" "$2" 2>&1 >/dev/null \
    | sed -n 's/^insns //p'
}

printf '%-22s %12s %16s\n' bundle bytes "insns/inference"
for model in mobilenet resnet; do
  declare -A per=() size=()
  for q in f32 int8; do
    b="$out/$model-$q.bundle"
    one=$(count "$b" 1)
    three=$(count "$b" 3)
    per[$q]=$(( (three - one) / 2 ))
    size[$q]=$(stat -c %s "$b")
    printf '%-22s %12d %16d\n' "$model-$q" "${size[$q]}" "${per[$q]}"
  done
  awk -v m="$model" -v pi="${per[int8]}" -v pf="${per[f32]}" -v si="${size[int8]}" -v sf="${size[f32]}" \
    'BEGIN { printf "%-22s %11.2fx %15.2fx   (int8 / f32)\n", m, si / sf, pi / pf }'
done
echo "conversion reports: $out/reports.txt"
