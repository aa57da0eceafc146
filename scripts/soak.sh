#!/usr/bin/env bash
# The soak test of `edgetune serve` (runtime/device/tests/serve/soak.rs): SECONDS
# (default 60) of predictions, labels, new classes, status, rollbacks and malformed
# requests on its socket; then checks memory, descriptors, state files and labels, and
# prints the memory curve. `scripts/soak.sh 3600` is an hour.
set -euo pipefail
cd "$(dirname "$0")/.."
export EDGETUNE_SOAK_SECS=${1:-60}
# --workspace: the same build (features) as the workspace tests, so nothing is rebuilt.
cargo test --workspace --test serve soak -- --ignored --nocapture
