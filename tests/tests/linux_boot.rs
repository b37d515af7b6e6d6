//! A stock Linux kernel (Debian's cloud kernel, fetched by
//! scripts/setup.sh) boots as a bzImage: its banner and the e820 map it
//! prints on the serial console must match the memory map vmm built, and
//! the NUMA nodes it finds in the SRAT those of `-numa`.

use serde_json::json;
use std::path::Path;
use std::time::Duration;
use vmm_tests::{asset, full_boot_unavailable, wait_for_text, VmmProcess};

/// The e820 map vmm gives a 512 MiB pc guest, as Linux prints it.
const E820_512M: &[&str] = &[
    "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
    "BIOS-e820: [mem 0x000000000009fc00-0x000000000009ffff] reserved",
    "BIOS-e820: [mem 0x00000000000e0000-0x00000000000fffff] reserved",
    "BIOS-e820: [mem 0x0000000000100000-0x000000001fffffff] usable",
];

/// Debian's cloud kernel on a 512 MiB machine with `initrd` and `append`,
/// its console on `serial`; then `extra`.
fn boot_linux(initrd: &Path, append: &str, serial: &Path, extra: &[&str]) -> VmmProcess {
    let kernel = asset("kernel/vmlinuz");
    let serial = format!("file:{}", serial.display());
    let mut args = vec![
        "-nodefaults",
        "-m",
        "512",
        "-kernel",
        kernel.to_str().expect("path"),
        "-initrd",
        initrd.to_str().expect("path"),
        "-append",
        append,
        "-serial",
        &serial,
    ];
    args.extend_from_slice(extra);
    VmmProcess::start(&args)
}

#[test]
fn linux_bzimage_prints_its_banner_and_our_e820_map() {
    let dir = vmm_tests::TempDir::new("linux");
    let serial = dir.path().join("serial.log");
    // An initrd (its contents do not matter before user space): the kernel
    // reports where the loader put it.
    let initrd = dir.path().join("initrd.img");
    std::fs::write(&initrd, vec![0x5au8; 300 * 1024]).expect("initrd");
    // Two NUMA nodes, each 256 MiB of its own memory backend; the CPU
    // on node 0, node 1 memory only.
    let vmm = boot_linux(
        &initrd,
        "console=ttyS0 earlyprintk=serial",
        &serial,
        &[
            "-object",
            "memory-backend-ram,id=m0,size=256M",
            "-object",
            "memory-backend-ram,id=m1,size=256M",
            "-numa",
            "node,memdev=m0,cpus=0",
            "-numa",
            "node,memdev=m1",
        ],
    );
    let mut c = vmm.qmp();
    // The map, the initrd's place and the NUMA nodes come early, well
    // before the kernel dies on this host's emulated ring 0.
    let text = wait_for_text(&serial, Duration::from_secs(240), |l| {
        l.contains("Initmem setup node 1")
    });
    assert!(text.contains("Linux version"), "{text}");
    assert!(
        text.contains("Command line: console=ttyS0 earlyprintk=serial"),
        "{text}"
    );
    let printed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.find("BIOS-e820:").map(|i| l[i..].trim_end()))
        .collect();
    assert_eq!(printed, E820_512M);
    // The initrd sits page-aligned at the top of low RAM (512 MiB here),
    // as large as the file: 300 KiB = 0x4b000 bytes.
    let ramdisk = text
        .lines()
        .find(|l| l.contains("RAMDISK: [mem"))
        .expect("RAMDISK line");
    assert!(
        ramdisk.contains("RAMDISK: [mem 0x1ffb5000-0x1fffffff]"),
        "{ramdisk}"
    );
    for line in [
        "SRAT: PXM 0 -> APIC 0x00 -> Node 0",
        "ACPI: SRAT: Node 0 PXM 0 [mem 0x00000000-0x0009ffff]",
        "ACPI: SRAT: Node 0 PXM 0 [mem 0x00100000-0x0fffffff]",
        "ACPI: SRAT: Node 1 PXM 1 [mem 0x10000000-0x1fffffff]",
        "Initmem setup node 1 [mem 0x0000000010000000-0x000000001fffffff]",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    assert_eq!(c.ok("query-status", json!({}))["status"], "running");
    let cpus = c.ok("query-cpus", json!({}));
    assert_eq!(cpus.as_array().map(Vec::len), Some(1));
    assert_eq!(cpus[0]["arch"], "x86");
    assert!(cpus[0]["thread_id"].as_i64().is_some_and(|t| t > 0));
    if let Some(why) = full_boot_unavailable() {
        // The kernel dies later on this host; that is expected.
        eprintln!("skipped: booting to user space: {why}");
    }
    c.ok("quit", json!({}));
    c.wait_event("SHUTDOWN");
}

/// One newc cpio entry (the initramfs format): header, name, data, each
/// padded to 4 bytes.
fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// An initramfs whose /init (busybox sh) prints a marker and powers off.
fn busybox_initramfs() -> Vec<u8> {
    let busybox = std::fs::read(asset("busybox/busybox")).expect("busybox");
    let init = b"#!/bin/busybox sh\n/bin/busybox echo vmm-userspace-ok\n/bin/busybox poweroff -f\n";
    let mut cpio = Vec::new();
    cpio_entry(&mut cpio, 1, "bin", 0o040755, (0, 0), &[]);
    cpio_entry(&mut cpio, 2, "bin/busybox", 0o100755, (0, 0), &busybox);
    cpio_entry(&mut cpio, 3, "dev", 0o040755, (0, 0), &[]);
    cpio_entry(&mut cpio, 4, "dev/console", 0o020600, (5, 1), &[]);
    cpio_entry(&mut cpio, 5, "init", 0o100755, (0, 0), init);
    cpio_entry(&mut cpio, 6, "TRAILER!!!", 0, (0, 0), &[]);
    cpio
}

/// Where hardware virtualization lets Linux run its own ring 0, the same
/// kernel boots a busybox initramfs to its first line in user space and
/// powers off through ACPI; elsewhere the test says why it is skipped.
#[test]
fn linux_boots_busybox_to_user_space_where_the_host_allows() {
    if let Some(why) = full_boot_unavailable() {
        eprintln!("skipped: booting to user space: {why}");
        return;
    }
    let dir = vmm_tests::TempDir::new("linux-user");
    let serial = dir.path().join("serial.log");
    let initrd = dir.path().join("initramfs.cpio");
    std::fs::write(&initrd, busybox_initramfs()).expect("initramfs");
    let vmm = boot_linux(&initrd, "console=ttyS0 rdinit=/init panic=-1", &serial, &[]);
    let mut c = vmm.qmp();
    let text = wait_for_text(&serial, Duration::from_secs(240), |l| {
        l.contains("vmm-userspace-ok") || l.contains("Kernel panic")
    });
    assert!(text.contains("vmm-userspace-ok"), "{text}");
    let ev = c.wait_event("SHUTDOWN");
    assert_eq!(ev["data"]["guest"], true, "{ev}");
}

#[test]
fn the_initramfs_is_a_newc_archive_the_kernel_can_read() {
    // Checked here as well as where Linux boots: the format's fields.
    let mut cpio = Vec::new();
    cpio_entry(&mut cpio, 7, "init", 0o100755, (0, 0), b"abc");
    assert_eq!(&cpio[..6], b"070701");
    assert_eq!(&cpio[6..14], b"00000007");
    assert_eq!(&cpio[14..22], b"000081ed");
    assert_eq!(&cpio[54..62], b"00000003"); // file size
    assert_eq!(&cpio[94..102], b"00000005"); // name size with its NUL
    assert_eq!(&cpio[110..115], b"init\0");
    assert_eq!(cpio.len() % 4, 0);
    assert_eq!(&cpio[116..119], b"abc");
}
