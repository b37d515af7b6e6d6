#!/usr/bin/env bash
# Installs what vmm's build and tests need on a fresh Debian machine.
# Idempotent: does nothing when everything is there.
set -euo pipefail

need_apt=()
command -v cc >/dev/null || need_apt+=(gcc)
command -v qemu-img >/dev/null || need_apt+=(qemu-utils)
# The tls-creds tests make their certificates with it.
command -v openssl >/dev/null || need_apt+=(openssl)
# The firmware the -bios tests boot (Debian's SeaBIOS build).
[ -e /usr/share/seabios/bios-256k.bin ] || need_apt+=(seabios)

if ((${#need_apt[@]})); then
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null; then
    echo "setup: cargo is missing; install Rust (rustup) first" >&2
    exit 1
fi

if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
    echo "setup: /dev/kvm is not usable by $(id -un); vmm needs KVM" >&2
    exit 1
fi

# A stock Linux kernel for the boot smoke test: Debian's cloud kernel,
# fetched as a package and unpacked here, never committed.
kernel_dir=tests/assets/kernel
if [ ! -s "$kernel_dir/vmlinuz" ]; then
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
    if [ -z "$pkg" ]; then
        $SUDO apt-get update -qq
        pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
    fi
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1 && dpkg-deb -x ./*.deb x)
    mkdir -p "$kernel_dir"
    cp "$tmp"/x/boot/vmlinuz-* "$kernel_dir/vmlinuz"
    rm -rf "$tmp"
fi

# Busybox for the user-space boot test (run only where hardware
# virtualization lets Linux get that far): Debian's static build.
busybox_dir=tests/assets/busybox
if [ ! -s "$busybox_dir/busybox" ]; then
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download busybox-static >/dev/null 2>&1 && dpkg-deb -x ./*.deb x)
    mkdir -p "$busybox_dir"
    cp "$tmp"/x/bin/busybox "$busybox_dir/busybox"
    rm -rf "$tmp"
fi
