//! Character devices end to end: the test guest's COM1 on each backend
//! (file, stdio, ringbuf, pty, unix and tcp sockets, udp), input back to
//! the guest (its `echo` test), breaks, chardev-change under a running
//! serial port, and the QMP commands' answers and errors.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vmm_tests::{run_vmm, wait_for_text, QmpClient, TempDir, VmmProcess};

const GUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn guest() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/target/guest.elf");
    assert!(
        p.exists(),
        "{} is missing: run tests/guest/build.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Starts the guest paused with `test=TEST` and the given serial options
/// (without a debug-exit device: the guest halts at its end and vmm
/// stays up for more commands).
fn start_guest(test: &str, extra: &[&str]) -> VmmProcess {
    let elf = guest();
    let append = format!("test={test} timeout=30");
    let mut args = vec![
        "-nodefaults",
        "-S",
        "-m",
        "256",
        "-kernel",
        elf.to_str().expect("path"),
        "-append",
        &append,
    ];
    args.extend_from_slice(extra);
    VmmProcess::start(&args)
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

/// Reads from `r` until the text contains `needle`; returns all of it.
fn read_until(r: &mut dyn Read, seen: &mut String, needle: &str) {
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        assert!(Instant::now() < deadline, "no '{needle}' in {seen:?}");
        match r.read(&mut buf) {
            Ok(0) => panic!("end of stream before '{needle}': {seen:?}"),
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
}

/// The guest's `echo` conversation over a stream: lines in, lines out.
fn echo_conversation<S: Read + Write>(s: &mut S, seen: &mut String) {
    read_until(s, seen, "vmm-guest: echo ready");
    s.write_all(b"hello chardev\n").expect("write");
    read_until(s, seen, "vmm-guest: echo hello chardev");
    // More than the UART's FIFO at once: input waits in the backend.
    let long: String = (0..100)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    s.write_all(format!("{long}\n").as_bytes()).expect("write");
    read_until(s, seen, &format!("vmm-guest: echo {}", &long[..100]));
    s.write_all(b"quit\n").expect("write");
    read_until(s, seen, "vmm-guest: ok echo");
}

#[test]
fn file_backend_gets_the_guest_output() {
    let dir = TempDir::new("chardev-file");
    let out = dir.path().join("out.log");
    let chardev = format!("file,id=f,path={}", out.display());
    let vmm = start_guest("serial", &["-chardev", &chardev, "-serial", "chardev:f"]);
    let mut c = vmm.qmp();
    let info = chardev_info(&mut c, "f");
    assert_eq!(
        info,
        json!({"label": "f", "filename": "file", "frontend-open": true})
    );
    c.ok("cont", json!({}));
    let text = wait_for_text(&out, GUEST_TIMEOUT, |t| t.contains("ok serial"));
    assert!(text.contains("vmm-guest: start"), "{text}");
}

#[test]
fn stdio_output_is_flushed_before_the_guest_exits() {
    let elf = guest();
    let (st, out, err) = run_vmm(&[
        "-nodefaults",
        "-m",
        "256",
        "-kernel",
        elf.to_str().expect("path"),
        "-append",
        "test=serial",
        "-serial",
        "stdio",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
    ]);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(out.contains("vmm-guest: ok serial"), "{out} {err}");
}

#[test]
fn ringbuf_keeps_the_newest_output_and_ringbuf_commands_follow_qemu() {
    let vmm = start_guest(
        "serial",
        &["-chardev", "ringbuf,id=r,size=4096", "-serial", "chardev:r"],
    );
    let mut c = vmm.qmp();
    c.ok("cont", json!({}));
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let mut seen = String::new();
    while !seen.contains("ok serial") {
        assert!(Instant::now() < deadline, "{seen:?}");
        let r = c.ok("ringbuf-read", json!({"device": "r", "size": 1000}));
        seen.push_str(r.as_str().expect("string"));
        std::thread::sleep(Duration::from_millis(10));
    }

    // Overwrite: a ring of 8 keeps the last 8 bytes written.
    let add = json!({"id": "small", "backend": {"type": "memory", "data": {"size": 8}}});
    assert_eq!(c.ok("chardev-add", add), json!({}));
    c.ok(
        "ringbuf-write",
        json!({"device": "small", "data": "abcdefghij"}),
    );
    assert_eq!(
        c.ok("ringbuf-read", json!({"device": "small", "size": 3})),
        json!("cde")
    );
    // Four more bytes: "fghij" plus these is 9, so "f" goes.
    c.ok(
        "ringbuf-write",
        json!({"device": "small", "data": "AAEC/w==", "format": "base64"}),
    );
    assert_eq!(
        c.ok(
            "ringbuf-read",
            json!({"device": "small", "size": 100, "format": "base64"})
        ),
        json!("Z2hpagABAv8=")
    );
    assert_eq!(
        c.ok("ringbuf-read", json!({"device": "small", "size": 100})),
        json!("")
    );
    let err = |c: &mut QmpClient, cmd: &str, a: Value| c.err(cmd, a).1;
    assert_eq!(
        err(
            &mut c,
            "ringbuf-read",
            json!({"device": "small", "size": 0})
        ),
        "size must be greater than zero"
    );
    assert_eq!(
        err(&mut c, "ringbuf-read", json!({"device": "nope", "size": 1})),
        "Device 'nope' not found"
    );
    c.ok(
        "chardev-add",
        json!({"id": "n", "backend": {"type": "null", "data": {}}}),
    );
    assert_eq!(
        err(&mut c, "ringbuf-write", json!({"device": "n", "data": "x"})),
        "n is not a ringbuf device"
    );
    assert_eq!(
        err(
            &mut c,
            "ringbuf-write",
            json!({"device": "small", "data": "a*b", "format": "base64"})
        ),
        "Base64 data contains invalid characters"
    );
    let bad = json!({"id": "b", "backend": {"type": "ringbuf", "data": {"size": 3}}});
    assert_eq!(
        err(&mut c, "chardev-add", bad),
        "size of ringbuf chardev must be power of two"
    );
}

fn open_pty(path: &str) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags_noctty()
        .open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: termios calls on a descriptor we own, local structure.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(f.as_raw_fd(), &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t), 0);
    }
    f
}

trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}

impl NoCtty for std::fs::OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOCTTY)
    }
}

#[test]
fn pty_round_trips_bytes_with_the_guest() {
    let vmm = start_guest("echo", &["-serial", "pty"]);
    let mut c = vmm.qmp();
    let info = chardev_info(&mut c, "serial0");
    let filename = info["filename"].as_str().expect("filename").to_string();
    let path = filename
        .strip_prefix("pty:")
        .expect("pty:/dev/pts/N")
        .to_string();
    assert!(path.starts_with("/dev/pts/"), "{filename}");
    assert_eq!(info["frontend-open"], json!(true));
    let mut pty = open_pty(&path);
    c.ok("cont", json!({}));
    echo_conversation(&mut pty, &mut String::new());

    // chardev-add pty reports the path, as query-chardev does.
    let r = c.ok(
        "chardev-add",
        json!({"id": "p2", "backend": {"type": "pty", "data": {}}}),
    );
    let p2 = r["pty"].as_str().expect("pty path");
    assert_eq!(
        chardev_info(&mut c, "p2"),
        json!({"label": "p2", "filename": format!("pty:{p2}"), "frontend-open": false})
    );
    c.ok("chardev-remove", json!({"id": "p2"}));
}

#[test]
fn unix_socket_server_round_trips_and_delivers_breaks() {
    let dir = TempDir::new("chardev-unix");
    let sock = dir.path().join("com1.sock");
    let serial = format!("unix:{},server,nowait", sock.display());
    let vmm = start_guest("echo", &["-serial", &serial]);
    let mut c = vmm.qmp();
    assert_eq!(
        chardev_info(&mut c, "serial0")["filename"],
        json!(format!("disconnected:unix:{},server", sock.display()))
    );
    let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    c.ok("cont", json!({}));
    let mut seen = String::new();
    read_until(&mut s, &mut seen, "echo ready");
    assert_eq!(
        chardev_info(&mut c, "serial0")["filename"],
        json!(format!("unix:{},server", sock.display()))
    );
    c.ok("chardev-send-break", json!({"id": "serial0"}));
    read_until(&mut s, &mut seen, "vmm-guest: echo break");
    echo_conversation(&mut s, &mut seen);
    // A serial port's chardev cannot go while the port uses it.
    assert_eq!(
        c.err("chardev-remove", json!({"id": "serial0"})).1,
        "Chardev 'serial0' is busy"
    );
    drop(s);
    // The server listens again once its client leaves.
    let deadline = Instant::now() + GUEST_TIMEOUT;
    loop {
        let f = chardev_info(&mut c, "serial0")["filename"].clone();
        if f.as_str().is_some_and(|f| f.starts_with("disconnected:")) {
            break;
        }
        assert!(Instant::now() < deadline, "{f}");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::os::unix::net::UnixStream::connect(&sock).expect("second client");
}

#[test]
fn server_wait_blocks_start_until_a_client_connects() {
    let dir = TempDir::new("chardev-wait");
    let sock = dir.path().join("com1.sock");
    let serial = format!("unix:{},server", sock.display());
    let elf = guest();
    let qmp = dir.path().join("qmp.sock");
    let mut child = std::process::Command::new(vmm_tests::vmm_binary())
        .args([
            "-nodefaults",
            "-m",
            "256",
            "-kernel",
            elf.to_str().expect("path"),
            "-append",
            "test=serial",
            "-serial",
            &serial,
            "-qmp",
            &format!("unix:{},server,nowait", qmp.display()),
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + GUEST_TIMEOUT;
    while !sock.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(100));
    // Still waiting: the monitor is not up yet.
    assert!(!qmp.exists());
    let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    let mut seen = String::new();
    read_until(&mut s, &mut seen, "ok serial");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    if let Some(e) = child.stderr.as_mut() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        err.contains(&format!(
            "QEMU waiting for connection on: disconnected:unix:{},server",
            sock.display()
        )),
        "{err}"
    );
}

#[test]
fn tcp_client_connects_to_the_test() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let chardev = format!("socket,id=t,host=127.0.0.1,port={port}");
    let vmm = start_guest("echo", &["-chardev", &chardev, "-serial", "chardev:t"]);
    let (mut s, peer) = listener.accept().expect("accept");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut c = vmm.qmp();
    assert_eq!(
        chardev_info(&mut c, "t")["filename"],
        json!(format!("tcp:{peer} <-> 127.0.0.1:{port}"))
    );
    c.ok("cont", json!({}));
    echo_conversation(&mut s, &mut String::new());
}

#[test]
fn udp_carries_datagrams_both_ways() {
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = peer.local_addr().expect("addr").port();
    let local = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let lport = local.local_addr().expect("addr").port();
    drop(local);
    let chardev =
        format!("udp,id=u,host=127.0.0.1,port={port},localaddr=127.0.0.1,localport={lport}");
    let vmm = start_guest("echo", &["-chardev", &chardev, "-serial", "chardev:u"]);
    let mut c = vmm.qmp();
    assert_eq!(chardev_info(&mut c, "u")["filename"], json!("udp"));
    peer.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    c.ok("cont", json!({}));
    let mut seen = String::new();
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let recv_until = |seen: &mut String, needle: &str| {
        let mut buf = [0u8; 2048];
        while !seen.contains(needle) {
            assert!(Instant::now() < deadline, "{seen:?}");
            if let Ok(n) = peer.recv(&mut buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    };
    recv_until(&mut seen, "echo ready");
    // vmm's socket is connected to `peer`: only its datagrams count.
    let to = format!("127.0.0.1:{lport}");
    peer.send_to(b"over udp\n", &to).expect("send");
    recv_until(&mut seen, "vmm-guest: echo over udp");
    peer.send_to(b"quit\n", &to).expect("send");
    recv_until(&mut seen, "ok echo");
}

#[test]
fn chardev_change_moves_a_running_serial_port_to_a_socket() {
    let dir = TempDir::new("chardev-change");
    let sock = dir.path().join("new.sock");
    let vmm = start_guest(
        "echo",
        &["-chardev", "ringbuf,id=c", "-serial", "chardev:c"],
    );
    let mut c = vmm.qmp();
    c.ok("cont", json!({}));
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let mut seen = String::new();
    while !seen.contains("echo ready") {
        assert!(Instant::now() < deadline, "{seen:?}");
        let r = c.ok("ringbuf-read", json!({"device": "c", "size": 1000}));
        seen.push_str(r.as_str().expect("string"));
        std::thread::sleep(Duration::from_millis(10));
    }
    let backend = json!({"type": "socket", "data": {
        "addr": {"type": "unix", "data": {"path": sock.display().to_string()}},
        "server": true, "wait": false}});
    assert_eq!(
        c.ok("chardev-change", json!({"id": "c", "backend": backend})),
        json!({})
    );
    let info = chardev_info(&mut c, "c");
    assert_eq!(info["frontend-open"], json!(true));
    let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    s.write_all(b"after change\n").expect("write");
    let mut seen = String::new();
    read_until(&mut s, &mut seen, "vmm-guest: echo after change");
    s.write_all(b"quit\n").expect("write");
    read_until(&mut s, &mut seen, "ok echo");
}

#[test]
fn chardev_commands_answer_with_qemus_errors() {
    let vmm = VmmProcess::start(&["-S", "-nodefaults", "-chardev", "null,id=n0"]);
    let mut c = vmm.qmp();
    let err = |c: &mut QmpClient, cmd: &str, a: Value| c.err(cmd, a);
    let nul = json!({"type": "null", "data": {}});
    assert_eq!(
        err(&mut c, "chardev-add", json!({"id": "n0", "backend": nul})),
        (
            "GenericError".to_string(),
            "attempt to add duplicate property 'n0' to object (type 'container')".to_string()
        )
    );
    for kind in ["braille", "console"] {
        let b = json!({"type": kind, "data": {}});
        assert_eq!(
            err(&mut c, "chardev-add", json!({"id": "x", "backend": b})).1,
            format!("'{kind}' is not a valid char driver name")
        );
    }
    assert_eq!(
        err(&mut c, "chardev-remove", json!({"id": "nope"})).1,
        "Chardev 'nope' not found"
    );
    assert_eq!(
        err(&mut c, "chardev-send-break", json!({"id": "nope"})).1,
        "Chardev 'nope' not found"
    );
    assert_eq!(
        err(
            &mut c,
            "chardev-change",
            json!({"id": "nope", "backend": nul})
        )
        .1,
        "Chardev 'nope' does not exist"
    );
    let missing = json!({"type": "socket", "data": {
        "addr": {"type": "unix", "data": {"path": "/nonexistent/dir/s"}}, "server": false}});
    assert_eq!(
        err(
            &mut c,
            "chardev-add",
            json!({"id": "s", "backend": missing})
        )
        .1,
        "Failed to connect socket /nonexistent/dir/s: No such file or directory"
    );
    let file = json!({"type": "file", "data": {"out": "/nonexistent/dir/f"}});
    assert_eq!(
        err(&mut c, "chardev-add", json!({"id": "f", "backend": file})).1,
        "Could not open '/nonexistent/dir/f': No such file or directory"
    );
    // The monitor's own chardev is in use; a free one goes.
    assert_eq!(
        err(&mut c, "chardev-remove", json!({"id": "compat_monitor0"})).1,
        "Chardev 'compat_monitor0' is busy"
    );
    c.ok("chardev-remove", json!({"id": "n0"}));
    let labels: Vec<Value> = c
        .ok("query-chardev", json!({}))
        .as_array()
        .expect("list")
        .iter()
        .map(|i| i["label"].clone())
        .collect();
    assert_eq!(labels, vec![json!("compat_monitor0")]);
    let backends = c.ok("query-chardev-backends", json!({}));
    let names: Vec<&str> = backends
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    for n in [
        "file", "socket", "pty", "ringbuf", "memory", "stdio", "udp", "null",
    ] {
        assert!(names.contains(&n), "{names:?}");
    }
    assert!(!names.contains(&"braille"), "{names:?}");
}

#[test]
fn stdio_cannot_serve_two_chardevs() {
    let (st, _, err) = run_vmm(&[
        "-S",
        "-nodefaults",
        "-chardev",
        "stdio,id=a",
        "-serial",
        "stdio",
    ]);
    assert_eq!(st.code(), Some(1));
    assert!(
        err.contains("cannot use stdio by multiple character devices"),
        "{err}"
    );
}

/// A TCP server chardev with `telnet` or `tn3270` on; returns vmm, the
/// port and the option's name in the filename (`telnet` or `tcp`).
fn telnet_guest(option: &str) -> (VmmProcess, QmpClient, u16) {
    let chardev = format!("socket,id=t,host=127.0.0.1,port=0,server,nowait,{option}");
    let vmm = start_guest("echo", &["-chardev", &chardev, "-serial", "chardev:t"]);
    let mut c = vmm.qmp();
    let f = chardev_info(&mut c, "t")["filename"]
        .as_str()
        .expect("filename")
        .to_string();
    let kind = if option == "telnet" { "telnet" } else { "tcp" };
    let port = f
        .strip_prefix(&format!("disconnected:{kind}:127.0.0.1:"))
        .and_then(|p| p.strip_suffix(",server"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{f}"));
    (vmm, c, port)
}

fn connect_and_read(port: u16, n: usize) -> (std::net::TcpStream, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(GUEST_TIMEOUT)).expect("timeout");
    let mut first = vec![0u8; n];
    s.read_exact(&mut first).expect("negotiation");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    (s, first)
}

#[test]
fn telnet_server_negotiates_and_takes_commands_out_of_the_input() {
    let (_vmm, mut c, port) = telnet_guest("telnet");
    let (mut s, first) = connect_and_read(port, 12);
    // WILL ECHO, WILL SUPPRESS-GO-AHEAD, WILL BINARY, DO BINARY.
    assert_eq!(
        first,
        [255, 251, 1, 255, 251, 3, 255, 251, 0, 255, 253, 0],
        "{first:?}"
    );
    let me = s.local_addr().expect("addr");
    assert_eq!(
        chardev_info(&mut c, "t")["filename"],
        json!(format!("telnet:127.0.0.1:{port},server <-> {me}"))
    );
    c.ok("cont", json!({}));
    let mut seen = String::new();
    read_until(&mut s, &mut seen, "vmm-guest: echo ready");
    // The client's answers, split anywhere, never reach the guest.
    s.write_all(b"te\xff\xfd\x01l\xff").expect("write");
    s.write_all(b"\xfb\x03net\n").expect("write");
    read_until(&mut s, &mut seen, "vmm-guest: echo telnet\n");
    // IAC BREAK is a break on the serial line.
    s.write_all(b"\xff\xf3").expect("write");
    read_until(&mut s, &mut seen, "vmm-guest: echo break");
    echo_conversation(&mut s, &mut seen);
}

#[test]
fn tn3270_server_negotiates_as_rfc_1576() {
    let (_vmm, mut c, port) = telnet_guest("tn3270");
    let (mut s, first) = connect_and_read(port, 21);
    // DO/WILL EOR, DO/WILL BINARY, DO TERMINAL-TYPE, SB TERMINAL-TYPE
    // SEND IAC SE.
    assert_eq!(
        first,
        [
            255, 253, 25, 255, 251, 25, 255, 253, 0, 255, 251, 0, 255, 253, 24, 255, 250, 24, 1,
            255, 240
        ],
        "{first:?}"
    );
    c.ok("cont", json!({}));
    let mut seen = String::new();
    read_until(&mut s, &mut seen, "vmm-guest: echo ready");
    // NOP and option answers go; the data stays.
    s.write_all(b"x\xff\xf1y\xff\xfb\x18z\n").expect("write");
    read_until(&mut s, &mut seen, "vmm-guest: echo xyz\n");
}
