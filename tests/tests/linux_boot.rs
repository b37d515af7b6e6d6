//! A stock Linux kernel (Debian's cloud kernel, fetched by
//! scripts/setup.sh) boots as a bzImage: its banner and the e820 map it
//! prints on the serial console must match the memory map vmm built.

use serde_json::json;
use std::time::Duration;
use vmm_tests::{asset, full_boot_unavailable, wait_for_text, VmmProcess};

/// The e820 map vmm gives a 512 MiB pc guest, as Linux prints it.
const E820_512M: &[&str] = &[
    "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
    "BIOS-e820: [mem 0x000000000009fc00-0x000000000009ffff] reserved",
    "BIOS-e820: [mem 0x00000000000e0000-0x00000000000fffff] reserved",
    "BIOS-e820: [mem 0x0000000000100000-0x000000001fffffff] usable",
];

#[test]
fn linux_bzimage_prints_its_banner_and_our_e820_map() {
    let kernel = asset("kernel/vmlinuz");
    let dir = vmm_tests::TempDir::new("linux");
    let serial = dir.path().join("serial.log");
    // An initrd (its contents do not matter before user space): the kernel
    // reports where the loader put it.
    let initrd = dir.path().join("initrd.img");
    std::fs::write(&initrd, vec![0x5au8; 300 * 1024]).expect("initrd");
    let vmm = VmmProcess::start(&[
        "-nodefaults",
        "-m",
        "512",
        "-kernel",
        kernel.to_str().expect("path"),
        "-initrd",
        initrd.to_str().expect("path"),
        "-append",
        "console=ttyS0 earlyprintk=serial",
        "-serial",
        &format!("file:{}", serial.display()),
    ]);
    let mut c = vmm.qmp();
    // The map and the initrd's place come early, well before the kernel
    // dies on this host's emulated ring 0.
    let text = wait_for_text(&serial, Duration::from_secs(240), |l| {
        l.contains("RAMDISK: [mem")
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
