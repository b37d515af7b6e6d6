//! The human monitor: `human-monitor-command` compared with the QMP
//! answers each HMP command formats, and readline monitors on sockets
//! (`-monitor unix:...`, `-mon chardev=...,mode=readline`).

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vmm_tests::{wait_for_text, QmpClient, TempDir, VmmProcess, TIMEOUT};

const GUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn hmp(c: &mut QmpClient, line: &str) -> String {
    let r = c.ok("human-monitor-command", json!({ "command-line": line }));
    r.as_str()
        .unwrap_or_else(|| panic!("{line}: not a string: {r}"))
        .to_string()
}

/// What `info status` prints for a query-status answer.
fn status_text(s: &Value) -> String {
    let running = s["running"].as_bool().expect("running");
    let state = s["status"].as_str().expect("status");
    let mut t = format!("VM status: {}", if running { "running" } else { "paused" });
    if s["singlestep"] == json!(true) {
        t.push_str(" (single step mode)");
    }
    if !running && state != "paused" {
        t.push_str(&format!(" ({state})"));
    }
    t + "\r\n"
}

fn check_status(c: &mut QmpClient, expect_state: &str) {
    let s = c.ok("query-status", json!({}));
    assert_eq!(s["status"], expect_state);
    assert_eq!(hmp(c, "info status"), status_text(&s));
}

#[test]
fn info_status_follows_the_run_state() {
    let vmm = VmmProcess::start(&["-S", "-machine", "none"]);
    let mut c = vmm.qmp();
    check_status(&mut c, "prelaunch");
    assert_eq!(
        hmp(&mut c, "info status"),
        "VM status: paused (prelaunch)\r\n"
    );
    assert_eq!(hmp(&mut c, "cont"), "");
    check_status(&mut c, "running");
    assert_eq!(hmp(&mut c, "info status"), "VM status: running\r\n");
    assert_eq!(hmp(&mut c, "stop"), "");
    check_status(&mut c, "paused");
    assert_eq!(hmp(&mut c, "info status"), "VM status: paused\r\n");
    assert_eq!(hmp(&mut c, "c"), "");
    check_status(&mut c, "running");
    assert_eq!(
        c.event_names(),
        ["RESUME", "STOP", "RESUME"],
        "HMP's stop and cont emit QMP's events"
    );
}

#[test]
fn info_version_name_uuid_kvm_format_their_queries() {
    let uuid = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    let vmm = VmmProcess::start(&["-S", "-machine", "none", "-name", "guest7", "-uuid", uuid]);
    let mut c = vmm.qmp();
    let v = c.ok("query-version", json!({}));
    assert_eq!(
        hmp(&mut c, "info version"),
        format!(
            "{}.{}.{}{}\r\n",
            v["qemu"]["major"],
            v["qemu"]["minor"],
            v["qemu"]["micro"],
            v["package"].as_str().expect("package")
        )
    );
    assert_eq!(hmp(&mut c, "info name"), "guest7\r\n");
    assert_eq!(c.ok("query-name", json!({}))["name"], "guest7");
    assert_eq!(hmp(&mut c, "info uuid"), format!("{uuid}\r\n"));
    assert_eq!(c.ok("query-uuid", json!({}))["UUID"], uuid);
    let k = c.ok("query-kvm", json!({}));
    assert_eq!(k, json!({"enabled": true, "present": true}));
    assert_eq!(hmp(&mut c, "info kvm"), "kvm support: enabled\r\n");
    // Leading blanks and the info subcommand's own blanks are allowed.
    assert_eq!(hmp(&mut c, "  info   kvm  "), "kvm support: enabled\r\n");

    let vmm = VmmProcess::start(&["-S", "-machine", "none"]);
    let mut c = vmm.qmp();
    assert_eq!(hmp(&mut c, "info name"), "", "no -name: nothing");
    assert_eq!(
        hmp(&mut c, "info uuid"),
        "00000000-0000-0000-0000-000000000000\r\n"
    );
}

#[test]
fn errors_and_unknown_commands_print_qemus_texts() {
    let vmm = VmmProcess::start(&["-S", "-machine", "none"]);
    let mut c = vmm.qmp();
    assert_eq!(hmp(&mut c, "foo"), "unknown command: 'foo'\r\n");
    assert_eq!(hmp(&mut c, "info foo"), "unknown command: 'info foo'\r\n");
    assert_eq!(hmp(&mut c, ""), "");
    // A command whose QMP counterpart has not landed prints its error.
    let (_, desc) = c.err("query-tpm", json!({}));
    assert_eq!(hmp(&mut c, "info tpm"), format!("{desc}\r\n"));
    let (_, desc) = c.err("set_link", json!({"name": "n0", "up": false}));
    assert_eq!(hmp(&mut c, "set_link n0 off"), format!("{desc}\r\n"));
    assert_eq!(
        hmp(&mut c, "stop now"),
        "stop: extraneous characters at the end of line\r\nTry \"help stop\" for more information\r\n"
    );
    assert_eq!(
        hmp(&mut c, "xp /3q 0"),
        "invalid char in format: 'q'\r\nTry \"help xp\" for more information\r\n"
    );
    assert_eq!(
        hmp(&mut c, "pmemsave 0"),
        "unexpected end of expression\r\nTry \"help pmemsave\" for more information\r\n"
    );
    // `print` uses the last format, hex until another is given.
    assert_eq!(hmp(&mut c, "p 2+3*4"), "0xe\r\n");
    assert_eq!(hmp(&mut c, "print/d 0x10 - 20"), "-4\r\n");
    assert_eq!(hmp(&mut c, "p 7"), "7\r\n");
    assert_eq!(hmp(&mut c, "p/x 0"), "0\r\n");
    let (_, desc) = c.err(
        "human-monitor-command",
        json!({"command-line": "info cpus", "cpu-index": 3}),
    );
    assert_eq!(desc, "Parameter 'cpu-index' expects a CPU number");
    let help = hmp(&mut c, "help");
    assert!(help.contains("\r\nxp /fmt addr -- "), "{help}");
    assert!(help.contains("c|cont  -- "), "{help}");
    let chardevs = c.ok("query-chardev", json!({}));
    let expected: String = chardevs
        .as_array()
        .expect("list")
        .iter()
        .map(|d| {
            format!(
                "{}: filename={}\r\n",
                d["label"].as_str().expect("label"),
                d["filename"].as_str().expect("filename")
            )
        })
        .collect();
    assert_eq!(hmp(&mut c, "info chardev"), expected);
    let info_help = hmp(&mut c, "info");
    assert!(info_help.contains("info status  -- "), "{info_help}");
    assert_eq!(
        hmp(&mut c, "help info status"),
        hmp(&mut c, "? info status")
    );
}

fn guest() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/target/guest.elf");
    assert!(
        p.exists(),
        "{} is missing: run tests/guest/build.sh",
        p.display()
    );
    p
}

/// The test guest counting, stopped; (process, QMP client, counter address).
fn counting_guest(dir: &TempDir, extra: &[&str]) -> (VmmProcess, QmpClient, u64) {
    let serial = dir.path().join("com1.log");
    let elf = guest();
    let serial_arg = format!("file:{}", serial.display());
    let mut args = vec![
        "-nodefaults",
        "-m",
        "256",
        "-kernel",
        elf.to_str().expect("path"),
        "-append",
        "test=count",
        "-serial",
        &serial_arg,
    ];
    args.extend_from_slice(extra);
    let vmm = VmmProcess::start(&args);
    let mut c = vmm.qmp();
    let text = wait_for_text(&serial, GUEST_TIMEOUT, |l| l.contains("count addr="));
    let addr = text
        .lines()
        .find_map(|l| l.split("count addr=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|hex| u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok())
        .expect("counter address");
    // Let it count a while.
    std::thread::sleep(Duration::from_millis(200));
    c.ok("stop", json!({}));
    c.wait_event("STOP");
    (vmm, c, addr)
}

#[test]
fn info_cpus_and_registers_with_the_test_guest() {
    let dir = TempDir::new("hmp-cpus");
    let (_vmm, mut c, _) = counting_guest(&dir, &["-smp", "2"]);
    let cpus = c.ok("query-cpus", json!({}));
    let mut expected = String::new();
    for cpu in cpus.as_array().expect("list") {
        let i = cpu["CPU"].as_i64().expect("CPU");
        expected.push_str(&format!(
            "{} CPU #{i}: pc=0x{:016x}{} thread_id={}\r\n",
            if i == 0 { '*' } else { ' ' },
            cpu["pc"].as_i64().expect("pc") as u64,
            if cpu["halted"] == json!(true) {
                " (halted)"
            } else {
                ""
            },
            cpu["thread_id"]
        ));
    }
    assert_eq!(hmp(&mut c, "info cpus"), expected);
    let on_cpu1 = c.ok(
        "human-monitor-command",
        json!({"command-line": "info cpus", "cpu-index": 1}),
    );
    assert!(
        on_cpu1.as_str().expect("text").contains("\r\n* CPU #1:"),
        "{on_cpu1}"
    );

    let pc = cpus[0]["pc"].as_i64().expect("pc") as u64;
    let regs = hmp(&mut c, "info registers");
    let rip_line = regs
        .lines()
        .find(|l| l.starts_with("RIP=") || l.starts_with("EIP="))
        .unwrap_or_else(|| panic!("no RIP line: {regs}"));
    assert!(
        rip_line.starts_with(&format!("RIP={pc:016x} RFL=")),
        "{rip_line} vs pc {pc:#x}"
    );
    for prefix in [
        "RAX=", "CS =", "SS =", "GDT=", "CR0=", "EFER=", "FCW=", "XMM15=",
    ] {
        assert!(regs.contains(prefix), "{prefix} missing:\n{regs}");
    }
    assert_eq!(hmp(&mut c, "p/x $rip"), format!("{pc:#x}\r\n"));
}

#[test]
fn xp_and_x_read_what_pmemsave_and_memsave_write() {
    let dir = TempDir::new("hmp-mem");
    let (_vmm, mut c, addr) = counting_guest(&dir, &[]);
    let file = dir.path().join("mem.bin");
    let fname = file.to_str().expect("path");
    c.ok(
        "pmemsave",
        json!({"val": addr, "size": 16, "filename": fname}),
    );
    let bytes = std::fs::read(&file).expect("pmemsave file");
    let q = u64::from_le_bytes(bytes[..8].try_into().expect("8"));
    assert!(q > 0, "the counter ran");
    assert_eq!(
        hmp(&mut c, &format!("xp /1gx {addr:#x}")),
        format!("{addr:016x}: 0x{q:016x}\r\n")
    );
    let words: Vec<String> = bytes
        .chunks(4)
        .map(|w| format!("0x{:08x}", u32::from_le_bytes(w.try_into().expect("4"))))
        .collect();
    assert_eq!(
        hmp(&mut c, &format!("xp /4wx {addr}")),
        format!("{addr:016x}: {}\r\n", words.join(" "))
    );
    let b: Vec<String> = bytes.iter().map(|b| format!("{b:3}")).collect();
    assert_eq!(
        hmp(&mut c, &format!("xp /16bu {addr:#x}")),
        format!(
            "{addr:016x}: {}\r\n{:016x}: {}\r\n",
            b[..8].join(" "),
            addr + 8,
            b[8..].join(" ")
        )
    );
    assert_eq!(
        hmp(&mut c, &format!("xp /1gd {addr:#x}")),
        format!("{addr:016x}: {:>20}\r\n", q as i64)
    );
    // The HMP pmemsave writes the same bytes.
    let file2 = dir.path().join("mem2.bin");
    assert_eq!(
        hmp(
            &mut c,
            &format!("pmemsave {addr:#x} 16 \"{}\"", file2.display())
        ),
        ""
    );
    assert_eq!(std::fs::read(&file2).expect("hmp pmemsave"), bytes);

    // Virtual addresses, through the current CPU's page tables.
    let vfile = dir.path().join("virt.bin");
    c.ok(
        "memsave",
        json!({"val": addr, "size": 8, "filename": vfile.to_str().expect("path")}),
    );
    let v = u64::from_le_bytes(
        std::fs::read(&vfile).expect("memsave")[..8]
            .try_into()
            .expect("8"),
    );
    assert_eq!(
        hmp(&mut c, &format!("x /1gx {addr:#x}")),
        format!("{addr:016x}: 0x{v:016x}\r\n")
    );
    let vfile2 = dir.path().join("virt2.bin");
    assert_eq!(
        hmp(
            &mut c,
            &format!("memsave {addr:#x} 8 \"{}\"", vfile2.display())
        ),
        ""
    );
    assert_eq!(
        std::fs::read(&vfile2).expect("hmp memsave"),
        std::fs::read(&vfile).expect("memsave")
    );
    // The format sticks: a bare `xp` uses the last size and format.
    assert_eq!(
        hmp(&mut c, &format!("xp {addr:#x}")),
        format!("{addr:016x}: 0x{q:016x}\r\n"),
        "the last /fmt (here /1gx) is the default, for every monitor"
    );
}

/// Reads from a readline monitor until `needle` has arrived.
fn read_until(s: &mut UnixStream, needle: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {:?}",
            String::from_utf8_lossy(&got)
        );
        match s.read(&mut buf) {
            Ok(0) => panic!("closed; got {:?}", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn connect(path: &Path) -> UnixStream {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                return s;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("connect {}: {e}", path.display()),
        }
    }
}

#[test]
fn a_readline_monitor_on_a_unix_socket() {
    let dir = TempDir::new("hmp-sock");
    let sock = dir.path().join("hmp.sock");
    let arg = format!("unix:{},server,nowait", sock.display());
    let mut vmm = VmmProcess::start(&["-S", "-machine", "none", "-monitor", &arg]);
    let mut s = connect(&sock);
    let banner = read_until(&mut s, "(qemu) ");
    assert_eq!(
        banner,
        "QEMU 2.11.50 monitor - type 'help' for more information\r\n(qemu) "
    );
    s.write_all(b"info status\r\n").expect("write");
    let out = read_until(&mut s, "\r\n(qemu) ");
    assert!(
        out.ends_with("VM status: paused (prelaunch)\r\n(qemu) "),
        "{out:?}"
    );
    // Line editing: a typo rubbed out with backspace.
    s.write_all(b"info kvmx\x7f\n").expect("write");
    let out = read_until(&mut s, "\r\n(qemu) ");
    assert!(out.ends_with("kvm support: enabled\r\n(qemu) "), "{out:?}");
    // History: up arrow brings the last line back.
    s.write_all(b"\x1b[A\n").expect("write");
    let out = read_until(&mut s, "\r\n(qemu) ");
    assert!(out.ends_with("kvm support: enabled\r\n(qemu) "), "{out:?}");
    s.write_all(b"info history\n").expect("write");
    let out = read_until(&mut s, "\r\n(qemu) ");
    assert!(
        out.contains("0: 'info status'\r\n1: 'info kvm'\r\n2: 'info history'\r\n"),
        "{out:?}"
    );
    // The QMP monitor sees what HMP did.
    let mut c = vmm.qmp();
    s.write_all(b"cont\n").expect("write");
    read_until(&mut s, "\r\n(qemu) ");
    assert_eq!(c.wait_event("RESUME")["event"], "RESUME");
    s.write_all(b"quit\n").expect("write");
    assert_eq!(vmm.wait_exit().code(), Some(0));
}

#[test]
fn mon_chardev_mode_readline() {
    let dir = TempDir::new("hmp-mon");
    let sock = dir.path().join("hmp.sock");
    let chardev = format!("socket,id=h0,path={},server,nowait", sock.display());
    let vmm = VmmProcess::start(&[
        "-S",
        "-machine",
        "none",
        "-chardev",
        &chardev,
        "-mon",
        "chardev=h0,mode=readline",
    ]);
    let mut s = connect(&sock);
    read_until(&mut s, "(qemu) ");
    s.write_all(b"nosuch\n").expect("write");
    let out = read_until(&mut s, "\r\n(qemu) ");
    assert!(
        out.ends_with("unknown command: 'nosuch'\r\n(qemu) "),
        "{out:?}"
    );
    // A second client after the first leaves gets a fresh banner.
    drop(s);
    let mut s = connect(&sock);
    assert!(read_until(&mut s, "(qemu) ").starts_with("QEMU 2.11.50 monitor"));
    drop(vmm);
}
