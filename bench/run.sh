#!/usr/bin/env bash
# QMP control-plane benchmark: vmm against qemu-system-x86_64 on this machine.
# Builds vmm in release, installs Debian's qemu-system-x86 if it is missing,
# then runs bench/qmp_control_plane.py (arguments are passed on to it, e.g.
# --starts 30 --requests 20000 --json /tmp/qmp.json).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p vmm

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends qemu-system-x86
fi

exec python3 bench/qmp_control_plane.py \
    --vmm target/release/vmm \
    --qemu "$(command -v qemu-system-x86_64)" \
    "$@"
