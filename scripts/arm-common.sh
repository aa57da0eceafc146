# Shared by scripts/icount.sh and scripts/iprofile.sh (sourced, not run): what counting
# on a board's CPU model needs, and the aarch64 programs it counts.

# arm_prerequisites NAME TOOL...: each TOOL on the PATH and root (tools/arm-count mounts
# the board's /proc/cpuinfo in a private namespace), or exit naming what is missing.
arm_prerequisites() {
  local name=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || {
      echo "$name: $tool is missing (bash scripts/setup.sh installs the cross tools and qemu-user)" >&2
      exit 1
    }
  done
  [ "$(id -u)" = 0 ] || { echo "$name: tools/arm-count needs root (a private mount namespace for /proc/cpuinfo)" >&2; exit 1; }
}

# arm_build_examples: the aarch64 examples `embed` (edgetune) and `ort_embed` (ONNX
# Runtime), built together with one feature set so that both scripts share the build.
arm_build_examples() {
  cargo build --release -q -p edgetune --features tract,ort --example embed --example ort_embed \
    --target aarch64-unknown-linux-gnu
}
