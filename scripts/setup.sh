#!/usr/bin/env bash
# Installs everything the tests and the demo need beyond cargo itself, idempotently, so
# that a fresh machine (or CI) needs nothing done by hand. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
targets=$(sed -n '/^targets/,/^]/p' rust-toolchain.toml | grep -o '"[a-z0-9_-]*"' | tr -d '"')

# rustfmt checks formatting in scripts/test.sh; both are tiny when already present.
for c in rustfmt clippy; do
  rustup component list --toolchain "$toolchain" --installed | grep -q "^$c" \
    || rustup component add --toolchain "$toolchain" "$c"
done

missing=""
installed=$(rustup target list --toolchain "$toolchain" --installed)
for t in $targets; do
  grep -qx "$t" <<<"$installed" || missing="$missing $t"
done
if [ -n "$missing" ]; then
  echo "setup: adding rustup targets:$missing"
  # shellcheck disable=SC2086
  rustup target add --toolchain "$toolchain" $missing
fi
