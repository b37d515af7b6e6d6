#!/usr/bin/env bash
# Builds the vmm test guest and prints the path of the result:
#   tests/guest/target/guest.elf
# Needs only the host Rust toolchain (x86_64-unknown-linux-gnu) and gcc as
# the linker; no network, no dependencies. Incremental: a no-op build
# takes well under a second.
set -euo pipefail
cd "$(dirname "$0")"

target=x86_64-unknown-linux-gnu
flags=(
    -C relocation-model=static
    -C code-model=small
    -C target-cpu=x86-64
    -C panic=abort
    -C force-unwind-tables=no
    -C debuginfo=0
)
# CARGO_ENCODED_RUSTFLAGS beats every other way of passing flags, so what
# the caller's environment holds cannot leak into the guest.
export CARGO_ENCODED_RUSTFLAGS="$(IFS=$'\x1f'; echo "${flags[*]}")"
unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR

cargo build --quiet --release --offline --locked --target "$target" --target-dir target
out=target/guest.elf
if ! cmp -s "target/$target/release/vmm-guest" "$out" 2>/dev/null; then
    cp -f "target/$target/release/vmm-guest" "$out"
fi
echo "$PWD/$out"
