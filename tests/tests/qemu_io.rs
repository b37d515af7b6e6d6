//! `human-monitor-command qemu-io DEVICE "CMD"`: qemu-io's commands run on
//! a drive inside vmm; the real qemu-io checks the image afterwards.

use serde_json::json;
use std::process::Command;
use vmm_tests::{TempDir, VmmProcess};

#[test]
fn qemu_io_writes_reads_and_verifies_through_the_monitor() {
    let dir = TempDir::new("qio");
    let img = dir.path().join("d.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).expect("image");
    let drive = format!("file={},if=none,id=d0,format=raw", img.display());
    let mut vmm = VmmProcess::start(&["-S", "-nodefaults", "-drive", &drive]);
    let mut c = vmm.qmp();
    let out = c.hmp("qemu-io d0 \"write -P 0xab 0 4k\"");
    assert!(
        out.starts_with("wrote 4096/4096 bytes at offset 0\r\n4 KiB, 1 ops; "),
        "{out}"
    );
    let out = c.hmp("qemu-io d0 \"read -P 0xab 0 4k\"");
    assert!(
        out.starts_with("read 4096/4096 bytes at offset 0\r\n"),
        "{out}"
    );
    let out = c.hmp("qemu-io d0 \"read -P 0x11 0 512\"");
    assert!(
        out.starts_with("Pattern verification failed at offset 0, 512 bytes\r\n"),
        "{out}"
    );
    let out = c.hmp("qemu-io d0 \"write -z 512 512\"");
    assert!(
        out.starts_with("wrote 512/512 bytes at offset 512\r\n"),
        "{out}"
    );
    let out = c.hmp("qemu-io d0 \"read -v 510 4\"");
    assert!(out.starts_with("000001fe:  ab ab 00 00 "), "{out}");
    assert_eq!(c.hmp("qemu-io d0 \"flush\""), "");
    assert_eq!(
        c.hmp("qemu-io d0 \"frobnicate\""),
        "command \"frobnicate\" not found\r\n"
    );
    assert_eq!(
        c.hmp("qemu-io nosuch \"read 0 1\""),
        "Cannot find device=nosuch nor node_name=nosuch\r\n"
    );
    c.ok("quit", json!({}));
    assert_eq!(vmm.wait_exit().code(), Some(0));
    // The real qemu-io sees the same bytes.
    let check = |cmd: &str| {
        let o = Command::new("qemu-io")
            .args(["-f", "raw", "-c", cmd])
            .arg(&img)
            .output()
            .expect("qemu-io (scripts/setup.sh installs qemu-utils)");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(!check("read -P 0xab 0 512").contains("verification failed"));
    assert!(!check("read -P 0 512 512").contains("verification failed"));
    assert!(!check("read -P 0xab 1024 3k").contains("verification failed"));
}
