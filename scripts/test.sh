#!/usr/bin/env bash
# Sets up a fresh machine and runs every test of vmm.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
tests/guest/build.sh
cargo build --workspace --locked
cargo test --workspace --locked
