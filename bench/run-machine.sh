#!/usr/bin/env bash
# KVM machine benchmark: vmm against qemu-system-x86_64 booting the test guest
# (tests/guest) on this machine.  Builds vmm in release (which builds the
# embedded guest too) and the guest ELF, installs Debian's qemu-system-x86 if
# it is missing, then runs bench/machine_boot.py (arguments are passed on to
# it, e.g. --runs 20 --mem-runs 5 --json /tmp/machine.json).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p vmm
guest="$(tests/guest/build.sh)"

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends qemu-system-x86
fi

exec python3 bench/machine_boot.py \
    --vmm target/release/vmm \
    --guest "$guest" \
    --qemu "$(command -v qemu-system-x86_64)" \
    "$@"
