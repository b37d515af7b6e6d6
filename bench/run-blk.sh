#!/usr/bin/env bash
# virtio-blk I/O benchmark (issue 6): the test guest's virtio-blk-bench
# workload under vmm and under qemu-system-x86_64 on one raw file
# (cache.direct=on, aio=native), with the host's fio on the same file as the
# physical limit.  Builds vmm in release and the guest ELF, installs Debian's
# qemu-system-x86 and fio if missing, then runs bench/blk_io.py (arguments
# are passed on to it, e.g. --runs 5 --secs 3 --json /tmp/blk.json).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p vmm
guest="$(tests/guest/build.sh)"

if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v fio >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends \
        qemu-system-x86 fio
fi

# Run copies of the binaries, so that a rebuild in the tree during the run
# does not swap them under the benchmark.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp target/release/vmm "$tmp/vmm"
cp "$guest" "$tmp/guest.elf"

python3 bench/blk_io.py \
    --vmm "$tmp/vmm" \
    --guest "$tmp/guest.elf" \
    --qemu "$(command -v qemu-system-x86_64)" \
    --fio "$(command -v fio)" \
    "$@"
