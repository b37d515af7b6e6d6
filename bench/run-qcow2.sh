#!/usr/bin/env bash
# qcow2 I/O benchmark (issue 7): vmm against qemu-system-x86_64, both driven
# through HMP qemu-io over QMP, with qemu-img bench as a further reference.
# Builds vmm in release, installs Debian's qemu-system-x86 (and qemu-utils for
# qemu-img) if missing, then runs bench/qcow2_io.py (arguments are passed on
# to it, e.g. --runs 5 --ops 2000 --json /tmp/qcow2.json).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p vmm

if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v qemu-img >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends \
        qemu-system-x86 qemu-utils
fi

# Run a copy of the binary, so that a rebuild in the tree during the run does
# not swap it under the benchmark.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp target/release/vmm "$tmp/vmm"

python3 bench/qcow2_io.py \
    --vmm "$tmp/vmm" \
    --qemu "$(command -v qemu-system-x86_64)" \
    --qemu-img "$(command -v qemu-img)" \
    "$@"
