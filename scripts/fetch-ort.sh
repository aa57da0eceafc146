#!/usr/bin/env bash
# ONNX Runtime's shared library from its PyPI wheel, unpacked to DEST:
#
#     bash scripts/fetch-ort.sh VERSION DEST [aarch64]
#
# for this machine (scripts/setup.sh: the `ort` feature's tests and benches) or, with
# `aarch64`, for the boards (scripts/icount.sh counts it under qemu). Does nothing when
# DEST holds that version already (DEST's directory keeps a VERSION file). Written to a
# temporary name and renamed, so an interrupted run never leaves a truncated library.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: fetch-ort.sh VERSION DEST [aarch64]" >&2; exit 2; }
version=$1 dest=$2 arch=${3:-}
stamp=$(dirname "$dest")/VERSION
if [ -s "$dest" ] && { [ ! -e "$stamp" ] || [ "$(cat "$stamp")" = "$version" ]; }; then
  [ -e "$stamp" ] || echo "$version" >"$stamp"
  exit 0
fi
command -v python3 >/dev/null \
  || { echo "fetch-ort: python3 is needed to fetch ONNX Runtime $version from PyPI" >&2; exit 1; }
python3 -m pip --version >/dev/null 2>&1 \
  || { echo "fetch-ort: pip is needed (python3 -m pip) to fetch ONNX Runtime $version from PyPI" >&2; exit 1; }
platform=()
case "$arch" in
  "") ;;
  aarch64) platform=(--platform manylinux_2_28_aarch64 --python-version 3.11) ;;
  *) echo "fetch-ort: unknown platform '$arch' (only aarch64, or nothing for this machine)" >&2; exit 2 ;;
esac
echo "fetch-ort: fetching ONNX Runtime $version ${arch:-for this machine} (PyPI wheel) for $dest" >&2
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  "${platform[@]}" "onnxruntime==$version" -d "$wheels"
mkdir -p "$(dirname "$dest")"
# zipfile rather than unzip: one tool fewer on a fresh machine.
python3 - "$wheels" "$dest" <<'PY'
import glob, os, re, sys, zipfile
wheels, dest = sys.argv[1], sys.argv[2]
found = glob.glob(os.path.join(wheels, "onnxruntime-*.whl"))
if len(found) != 1:
    sys.exit(f"fetch-ort: expected one onnxruntime wheel in {wheels}, found {found}")
with zipfile.ZipFile(found[0]) as z:
    names = [n for n in z.namelist() if re.fullmatch(r"onnxruntime/capi/libonnxruntime\.so\.[0-9.]+", n)]
    if len(names) != 1:
        sys.exit(f"fetch-ort: no onnxruntime/capi/libonnxruntime.so.* in {found[0]}: {names}")
    tmp = dest + ".tmp-fetch"
    with z.open(names[0]) as src, open(tmp, "wb") as out:
        out.write(src.read())
    os.replace(tmp, dest)
PY
echo "$version" >"$stamp"
