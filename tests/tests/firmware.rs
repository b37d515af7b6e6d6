//! `-bios`: Debian's SeaBIOS from the reset vector, shadowed through the
//! i440FX PAM registers, configured through fw_cfg, booting a disk's MBR
//! from virtio-blk, as QEMU's `pc` machine does.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vmm_tests::{run_vmm, wait_for_text, TempDir, VmmProcess};

/// Debian's SeaBIOS; scripts/setup.sh installs the `seabios` package.
fn seabios() -> &'static str {
    let p = "/usr/share/seabios/bios-256k.bin";
    assert!(
        Path::new(p).exists(),
        "{p} is missing: run scripts/setup.sh (it installs Debian's seabios)"
    );
    p
}

const MESSAGE: &str = "vmm-mbr: booted by the BIOS";

/// A 1 MiB disk whose MBR prints MESSAGE on COM1, then either writes 0x10
/// to isa-debug-exit (vmm exits with 33) or halts for good.
fn mbr_disk(dir: &Path, exit: bool) -> PathBuf {
    let mut code: Vec<u8> = vec![
        0x31, 0xc0, // xor ax, ax
        0x8e, 0xd8, // mov ds, ax
        0xbe, 0x19, 0x7c, // mov si, message (0x7c19)
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xac, // next: lodsb
        0x84, 0xc0, // test al, al
        0x74, 0x03, // jz done
        0xee, // out dx, al
        0xeb, 0xf8, // jmp next
    ];
    code.extend_from_slice(if exit {
        &[0xb0, 0x10, 0xe6, 0xf4] // done: mov al, 0x10; out 0xf4, al
    } else {
        &[0x90, 0x90, 0x90, 0x90] // done: (nothing to report)
    });
    code.extend_from_slice(&[0xf4, 0xeb, 0xfd]); // hlt; jmp hlt
    assert_eq!(code.len(), 25);
    let mut disk = vec![0u8; 1 << 20];
    disk[..25].copy_from_slice(&code);
    let text = format!("{MESSAGE}\r\n\0");
    disk[25..25 + text.len()].copy_from_slice(text.as_bytes());
    disk[510] = 0x55;
    disk[511] = 0xaa;
    let path = dir.join("mbr.raw");
    std::fs::write(&path, &disk).expect("disk");
    path
}

fn bios_args(disk: &Path, serial: &Path) -> Vec<String> {
    [
        "-bios",
        seabios(),
        "-nographic",
        "-nodefaults",
        "-m",
        "128",
        "-serial",
        &format!("file:{}", serial.display()),
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-drive",
        &format!("file={},if=virtio,format=raw", disk.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn seabios_starts_and_boots_the_mbr_of_a_virtio_disk() {
    let dir = TempDir::new("bios-boot");
    let disk = mbr_disk(dir.path(), true);
    let serial = dir.path().join("com1.log");
    let args = bios_args(&disk, &serial);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vmm = VmmProcess::start(&args);
    let status = vmm.wait_exit();
    let out = std::fs::read_to_string(&serial).unwrap_or_default();
    // -nographic: SeaBIOS's console is COM1 (fw_cfg said so).
    assert!(out.contains("SeaBIOS (version"), "{out}");
    assert!(out.contains("Booting from Hard Disk"), "{out}");
    // (SeaBIOS's console may still print a dot into the MBR's line.)
    assert!(out.contains("booted by the BIOS"), "{out}");
    // The MBR wrote 0x10 to isa-debug-exit: (0x10 << 1) | 1.
    assert_eq!(status.code(), Some(33), "{out}");
}

#[test]
fn a_reset_runs_the_firmware_again_and_query_pci_shows_its_bars() {
    let dir = TempDir::new("bios-reset");
    let disk = mbr_disk(dir.path(), false);
    let serial = dir.path().join("com1.log");
    let args = bios_args(&disk, &serial);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    let mut c = vmm.qmp();
    let booted = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(&serial).unwrap_or_default();
            if text.matches("booted by the BIOS").count() >= n {
                return;
            }
            assert!(Instant::now() < deadline, "no boot {n}: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    booted(1);
    // SeaBIOS placed the BARs and turned decoding on.
    let pci = c.ok("query-pci", json!({}));
    let devs = pci[0]["devices"].as_array().expect("devices").clone();
    let blk = devs
        .iter()
        .find(|d| d["id"]["vendor"] == 0x1af4)
        .expect("virtio-blk");
    let regions = blk["regions"].as_array().expect("regions");
    assert!(!regions.is_empty(), "{blk}");
    for r in regions {
        let a = r["address"].as_u64().unwrap_or(u64::MAX);
        assert!(a != 0 && a < 0xffff_ffff_ffff, "{blk}");
    }
    c.ok("system_reset", json!({}));
    booted(2);
    let text = wait_for_text(&serial, Duration::from_secs(5), |l| l.contains("SeaBIOS"));
    assert_eq!(text.matches("SeaBIOS (version").count(), 2, "{text}");
    assert_eq!(c.ok("query-status", json!({}))["status"], "running");
}

#[test]
fn a_bad_firmware_image_is_refused_as_qemu_refuses_it() {
    let dir = TempDir::new("bios-bad");
    let odd = dir.path().join("odd.bin");
    std::fs::write(&odd, vec![0u8; 1000]).expect("file");
    for path in [
        odd.display().to_string(),
        "/nonexistent/bios.bin".to_string(),
    ] {
        let (st, _, err) = run_vmm(&["-bios", &path, "-nodefaults"]);
        assert_eq!(st.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("could not load PC BIOS '{path}'")),
            "{err}"
        );
    }
    let (st, _, err) = run_vmm(&["-bios", seabios(), "-kernel", "/dev/null"]);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains("not available yet"), "{err}");
}
