//! The `mux` chardev end to end: one socket shared by the guest's COM1
//! and the human monitor, driven with QEMU's Ctrl-A escapes from a
//! real client (focus switching, the banner and prompt on focus,
//! timestamps, exit), and `-nographic`'s serial and monitor on stdio.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vmm_tests::{vmm_binary, QmpClient, VmmProcess};

const GUEST_TIMEOUT: Duration = Duration::from_secs(60);
const BANNER: &str = "QEMU 2.11.50 monitor - type 'help' for more information\r\n";

fn guest() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/target/guest.elf");
    assert!(
        p.exists(),
        "{} is missing: run tests/guest/build.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Reads until the text contains `needle`; returns what came after the
/// text that was there before the call.
fn read_until(r: &mut dyn Read, seen: &mut String, needle: &str) -> String {
    let start = seen.len();
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let mut buf = [0u8; 4096];
    while !seen[start..].contains(needle) {
        assert!(Instant::now() < deadline, "no {needle:?} in {seen:?}");
        match r.read(&mut buf) {
            Ok(0) => panic!("end of stream before {needle:?}: {seen:?}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::Interrupted =>
            {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("read: {e} after {seen:?}"),
        }
    }
    seen[start..].to_string()
}

fn chardev_info(c: &mut QmpClient, label: &str) -> Value {
    let all = c.ok("query-chardev", json!({}));
    all.as_array()
        .expect("list")
        .iter()
        .find(|i| i["label"] == label)
        .cloned()
        .unwrap_or_else(|| panic!("no chardev {label} in {all}"))
}

#[test]
fn mux_socket_shares_the_serial_port_and_the_monitor() {
    let elf = guest();
    let dir = vmm_tests::TempDir::new("mux");
    let sock = dir.path().join("mux.sock");
    let chardev = format!("socket,id=m,path={},server,nowait,mux=on", sock.display());
    let mut vmm = VmmProcess::start(&[
        "-nodefaults",
        "-S",
        "-m",
        "256",
        "-kernel",
        elf.to_str().expect("path"),
        "-append",
        "test=echo timeout=60",
        "-chardev",
        &chardev,
        "-serial",
        "chardev:m",
        "-mon",
        "chardev=m,mode=readline",
    ]);
    let mut c = vmm.qmp();
    // QEMU's pair: the backend as m-base, the mux as m.
    assert_eq!(
        chardev_info(&mut c, "m"),
        json!({"label": "m", "filename": "mux", "frontend-open": true})
    );
    assert_eq!(
        chardev_info(&mut c, "m-base"),
        json!({"label": "m-base",
               "filename": format!("disconnected:unix:{},server", sock.display()),
               "frontend-open": true})
    );
    assert_eq!(
        c.err("chardev-remove", json!({"id": "m"})).1,
        "Chardev 'm' is busy"
    );
    assert_eq!(
        c.err("chardev-remove", json!({"id": "m-base"})).1,
        "Chardev 'm-base' is busy"
    );
    let null_backend = json!({"type": "null", "data": {}});
    assert_eq!(
        c.err(
            "chardev-change",
            json!({"id": "m", "backend": null_backend})
        )
        .1,
        "Mux device hotswap not supported yet"
    );

    let mut s = UnixStream::connect(&sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    // The guest's first lines are dropped unless the client is in.
    let deadline = Instant::now() + GUEST_TIMEOUT;
    while chardev_info(&mut c, "m-base")["filename"]
        .as_str()
        .is_some_and(|f| f.starts_with("disconnected:"))
    {
        assert!(Instant::now() < deadline, "the client was never accepted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut seen = String::new();
    c.ok("cont", json!({}));
    // The serial port has the focus: guest output and input.
    read_until(&mut s, &mut seen, "vmm-guest: echo ready\n");
    s.write_all(b"one\n").expect("write");
    read_until(&mut s, &mut seen, "vmm-guest: echo one\n");

    // C-a c: the monitor, with the banners it printed while it waited
    // (the mux opening at start, the client connecting), then a prompt.
    s.write_all(b"\x01c").expect("write");
    let text = read_until(&mut s, &mut seen, "(qemu) ");
    assert_eq!(text, format!("{BANNER}{BANNER}(qemu) "), "{seen:?}");
    s.write_all(b"info status\r").expect("write");
    let text = read_until(&mut s, &mut seen, "\r\n(qemu) ");
    assert!(
        text.ends_with("info status\x1b[K\r\nVM status: running\r\n(qemu) "),
        "{text:?}"
    );
    // Typed while the monitor has the focus: not the guest's.
    s.write_all(b"\x01c").expect("write");
    read_until(&mut s, &mut seen, "\r\n");
    s.write_all(b"two\n").expect("write");
    let text = read_until(&mut s, &mut seen, "vmm-guest: echo two");
    assert!(!text.contains("(qemu)"), "{text:?}");

    // C-a C-a sends C-a itself to the guest, which echoes it.
    s.write_all(b"a\x01\x01b\n").expect("write");
    read_until(&mut s, &mut seen, "vmm-guest: echo a\x01b\n");

    // C-a t: each line after the next line end carries the time.
    s.write_all(b"\x01tthree\nfour\n").expect("write");
    let text = read_until(&mut s, &mut seen, "vmm-guest: echo four\n");
    let four = text.find("vmm-guest: echo four").expect("four");
    let stamp = &text[..four];
    let stamp = &stamp[stamp.rfind('\n').map_or(0, |i| i + 1)..];
    assert!(
        stamp.len() == 15 && stamp.starts_with("[00:00:") && stamp.ends_with("] "),
        "{text:?}"
    );
    s.write_all(b"\x01t").expect("write");

    // Back in the monitor: a fresh prompt, no banner.
    s.write_all(b"\x01c").expect("write");
    let text = read_until(&mut s, &mut seen, "(qemu) ");
    assert!(!text.contains("QEMU 2.11.50 monitor"), "{text:?}");

    // C-a h: the escapes, each line ended "\n\r".
    s.write_all(b"\x01h").expect("write");
    let text = read_until(&mut s, &mut seen, "C-a C-a");
    assert!(text.starts_with("\n\rC-a h "), "{text:?}");
    assert!(text.contains("\n\rC-a x "), "{text:?}");

    // C-a x ends vmm as QEMU ends: the message, then status 0.
    s.write_all(b"\x01x").expect("write");
    read_until(&mut s, &mut seen, "QEMU: Terminated\n\r");
    let st = vmm.wait_exit();
    assert_eq!(st.code(), Some(0), "{}", vmm.stderr());
}

#[test]
fn nographic_muxes_serial_and_monitor_on_stdio() {
    let elf = guest();
    let mut child = Command::new(vmm_binary())
        .args([
            "-nographic",
            "-m",
            "256",
            "-kernel",
            elf.to_str().expect("path"),
            "-append",
            "test=echo timeout=60",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmm");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    // A reader thread keeps the test from blocking on a silent vmm.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let wait_for = |seen: &mut String, needle: &str| {
        let start = seen.len();
        let deadline = Instant::now() + GUEST_TIMEOUT;
        while !seen[start..].contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {needle:?} in {seen:?}");
            if let Ok(b) = rx.recv_timeout(left) {
                seen.push_str(&String::from_utf8_lossy(&b));
            }
        }
        seen[start..].to_string()
    };
    wait_for(&mut seen, "vmm-guest: echo ready\n");
    stdin.write_all(b"\x01c").expect("write");
    let text = wait_for(&mut seen, "(qemu) ");
    assert_eq!(text, format!("{BANNER}(qemu) "), "{seen:?}");
    stdin.write_all(b"info chardev\r").expect("write");
    let text = wait_for(&mut seen, "\r\n(qemu) ");
    assert!(
        text.contains("serial0-base: filename=stdio\r\nserial0: filename=mux\r\n"),
        "{text:?}"
    );
    stdin.write_all(b"\x01c").expect("write");
    stdin.write_all(b"hello\n").expect("write");
    wait_for(&mut seen, "vmm-guest: echo hello");
    stdin.write_all(b"\x01x").expect("write");
    wait_for(&mut seen, "QEMU: Terminated\n\r");
    let st = child.wait().expect("wait");
    assert_eq!(st.code(), Some(0));
}
