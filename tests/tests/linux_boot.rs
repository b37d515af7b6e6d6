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
    let vmm = VmmProcess::start(&[
        "-nodefaults",
        "-m",
        "512",
        "-kernel",
        kernel.to_str().expect("path"),
        "-append",
        "console=ttyS0 earlyprintk=serial",
        "-serial",
        &format!("file:{}", serial.display()),
    ]);
    let mut c = vmm.qmp();
    // The map comes early, a few seconds in even with ring 0 emulated.
    let text = wait_for_text(&serial, Duration::from_secs(240), |l| {
        l.contains("e820: [mem 0x0000000000100000")
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
