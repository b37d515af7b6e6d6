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
    assert_eq!(c.hmp("info status"), status_text(&s));
}

#[test]
fn info_status_follows_the_run_state() {
    let vmm = VmmProcess::start(&["-S", "-machine", "none"]);
    let mut c = vmm.qmp();
    check_status(&mut c, "prelaunch");
    assert_eq!(c.hmp("info status"), "VM status: paused (prelaunch)\r\n");
    assert_eq!(c.hmp("cont"), "");
    check_status(&mut c, "running");
    assert_eq!(c.hmp("info status"), "VM status: running\r\n");
    assert_eq!(c.hmp("stop"), "");
    check_status(&mut c, "paused");
    assert_eq!(c.hmp("info status"), "VM status: paused\r\n");
    assert_eq!(c.hmp("c"), "");
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
        c.hmp("info version"),
        format!(
            "{}.{}.{}{}\r\n",
            v["qemu"]["major"],
            v["qemu"]["minor"],
            v["qemu"]["micro"],
            v["package"].as_str().expect("package")
        )
    );
    assert_eq!(c.hmp("info name"), "guest7\r\n");
    assert_eq!(c.ok("query-name", json!({}))["name"], "guest7");
    assert_eq!(c.hmp("info uuid"), format!("{uuid}\r\n"));
    assert_eq!(c.ok("query-uuid", json!({}))["UUID"], uuid);
    let k = c.ok("query-kvm", json!({}));
    assert_eq!(k, json!({"enabled": true, "present": true}));
    assert_eq!(c.hmp("info kvm"), "kvm support: enabled\r\n");
    // Leading blanks and the info subcommand's own blanks are allowed.
    assert_eq!(c.hmp("  info   kvm  "), "kvm support: enabled\r\n");

    let vmm = VmmProcess::start(&["-S", "-machine", "none"]);
    let mut c = vmm.qmp();
    assert_eq!(c.hmp("info name"), "", "no -name: nothing");
    assert_eq!(
        c.hmp("info uuid"),
        "00000000-0000-0000-0000-000000000000\r\n"
    );
}

#[test]
fn errors_and_unknown_commands_print_qemus_texts() {
    let vmm = VmmProcess::start(&["-S", "-machine", "none"]);
    let mut c = vmm.qmp();
    assert_eq!(c.hmp("foo"), "unknown command: 'foo'\r\n");
    assert_eq!(c.hmp("info foo"), "unknown command: 'info foo'\r\n");
    assert_eq!(c.hmp(""), "");
    // A command whose QMP counterpart has not landed prints its error.
    let (_, desc) = c.err("query-dump", json!({}));
    assert_eq!(c.hmp("info dump"), format!("{desc}\r\n"));
    let (_, desc) = c.err("set_link", json!({"name": "n0", "up": false}));
    assert_eq!(c.hmp("set_link n0 off"), format!("{desc}\r\n"));
    assert_eq!(
        c.hmp("stop now"),
        "stop: extraneous characters at the end of line\r\nTry \"help stop\" for more information\r\n"
    );
    assert_eq!(
        c.hmp("xp /3q 0"),
        "invalid char in format: 'q'\r\nTry \"help xp\" for more information\r\n"
    );
    assert_eq!(
        c.hmp("pmemsave 0"),
        "unexpected end of expression\r\nTry \"help pmemsave\" for more information\r\n"
    );
    // `print` uses the last format, hex until another is given.
    assert_eq!(c.hmp("p 2+3*4"), "0xe\r\n");
    assert_eq!(c.hmp("print/d 0x10 - 20"), "-4\r\n");
    assert_eq!(c.hmp("p 7"), "7\r\n");
    assert_eq!(c.hmp("p/x 0"), "0\r\n");
    let (_, desc) = c.err(
        "human-monitor-command",
        json!({"command-line": "info cpus", "cpu-index": 3}),
    );
    assert_eq!(desc, "Parameter 'cpu-index' expects a CPU number");
    let help = c.hmp("help");
    assert!(help.contains("\r\nxp /fmt addr -- "), "{help}");
    assert!(help.contains("c|cont  -- "), "{help}");
    // QEMU's monitor sorts its command tables by name.
    let names: Vec<&str> = help.lines().filter_map(|l| l.split(' ').next()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "{help}");
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
    assert_eq!(c.hmp("info chardev"), expected);
    let info_help = c.hmp("info");
    assert!(info_help.contains("info status  -- "), "{info_help}");
    assert_eq!(c.hmp("help info status"), c.hmp("? info status"));
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
    // Let it count until the counter shows it (a loaded host may take
    // longer than a fixed pause to schedule the vCPU).
    let deadline = std::time::Instant::now() + GUEST_TIMEOUT;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let mem = c.hmp(&format!("xp /1gx {addr:#x}"));
        let counted = mem
            .split("0x")
            .nth(1)
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|v| v > 0);
        if counted {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the counter never ran: {mem}"
        );
    }
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
    assert_eq!(c.hmp("info cpus"), expected);
    let on_cpu1 = c.ok(
        "human-monitor-command",
        json!({"command-line": "info cpus", "cpu-index": 1}),
    );
    assert!(
        on_cpu1.as_str().expect("text").contains("\r\n* CPU #1:"),
        "{on_cpu1}"
    );

    let pc = cpus[0]["pc"].as_i64().expect("pc") as u64;
    let regs = c.hmp("info registers");
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
    assert_eq!(c.hmp("p/x $rip"), format!("{pc:#x}\r\n"));
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
        c.hmp(&format!("xp /1gx {addr:#x}")),
        format!("{addr:016x}: 0x{q:016x}\r\n")
    );
    let words: Vec<String> = bytes
        .chunks(4)
        .map(|w| format!("0x{:08x}", u32::from_le_bytes(w.try_into().expect("4"))))
        .collect();
    assert_eq!(
        c.hmp(&format!("xp /4wx {addr}")),
        format!("{addr:016x}: {}\r\n", words.join(" "))
    );
    let b: Vec<String> = bytes.iter().map(|b| format!("{b:3}")).collect();
    assert_eq!(
        c.hmp(&format!("xp /16bu {addr:#x}")),
        format!(
            "{addr:016x}: {}\r\n{:016x}: {}\r\n",
            b[..8].join(" "),
            addr + 8,
            b[8..].join(" ")
        )
    );
    assert_eq!(
        c.hmp(&format!("xp /1gd {addr:#x}")),
        format!("{addr:016x}: {:>20}\r\n", q as i64)
    );
    // The HMP pmemsave writes the same bytes.
    let file2 = dir.path().join("mem2.bin");
    assert_eq!(
        c.hmp(&format!("pmemsave {addr:#x} 16 \"{}\"", file2.display())),
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
        c.hmp(&format!("x /1gx {addr:#x}")),
        format!("{addr:016x}: 0x{v:016x}\r\n")
    );
    let vfile2 = dir.path().join("virt2.bin");
    assert_eq!(
        c.hmp(&format!("memsave {addr:#x} 8 \"{}\"", vfile2.display())),
        ""
    );
    assert_eq!(
        std::fs::read(&vfile2).expect("hmp memsave"),
        std::fs::read(&vfile).expect("memsave")
    );
    // The format sticks: a bare `xp` uses the last size and format.
    assert_eq!(
        c.hmp(&format!("xp {addr:#x}")),
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

fn qemu_img(args: &[&str]) {
    let out = std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("qemu-img: {e} (scripts/setup.sh installs qemu-utils)"));
    assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}"))
}

fn i(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// QEMU 2.11's block-layer size text (`64M`, `1.5K`, `999`).
fn human_size(size: i64) -> String {
    if size <= 999 {
        return size.to_string();
    }
    let mut base = 1024i64;
    for (n, suffix) in ["K", "M", "G", "T"].iter().enumerate() {
        if size < 10 * base {
            return format!("{:.1}{suffix}", size as f64 / base as f64);
        }
        if size < 1000 * base || n == 3 {
            return format!("{}{suffix}", (size + base / 2) / base);
        }
        base *= 1024;
    }
    unreachable!()
}

/// What `info block` prints for one query-block entry.
fn block_entry_text(b: &Value) -> String {
    let ins = &b["inserted"];
    let mut t = s(b, "device").to_string();
    if let Some(n) = ins["node-name"].as_str() {
        t += &format!(" ({n})");
    }
    if ins.is_object() {
        t += &format!(
            ": {} ({}{}{})\r\n",
            s(ins, "file"),
            s(ins, "drv"),
            if ins["ro"] == json!(true) {
                ", read-only"
            } else {
                ""
            },
            if ins["encrypted"] == json!(true) {
                ", encrypted"
            } else {
                ""
            }
        );
    } else {
        t += ": [not inserted]\r\n";
    }
    if let Some(q) = b["qdev"].as_str() {
        t += &format!("    Attached to:      {q}\r\n");
    }
    if let Some(st) = b["io-status"].as_str().filter(|st| *st != "ok") {
        t += &format!("    I/O status:       {st}\r\n");
    }
    if b["removable"] == json!(true) {
        t += &format!(
            "    Removable device: {}locked, tray {}\r\n",
            if b["locked"] == json!(true) {
                ""
            } else {
                "not "
            },
            if b["tray_open"] == json!(true) {
                "open"
            } else {
                "closed"
            }
        );
    }
    if ins.is_object() {
        let c = &ins["cache"];
        t += &format!(
            "    Cache mode:       {}{}{}\r\n",
            if c["writeback"] == json!(true) {
                "writeback"
            } else {
                "writethrough"
            },
            if c["direct"] == json!(true) {
                ", direct"
            } else {
                ""
            },
            if c["no-flush"] == json!(true) {
                ", ignore flushes"
            } else {
                ""
            }
        );
        if let Some(f) = ins["backing_file"].as_str() {
            t += &format!(
                "    Backing file:     {f} (chain depth: {})\r\n",
                i(ins, "backing_file_depth")
            );
        }
        if s(ins, "detect_zeroes") != "off" {
            t += &format!("    Detect zeroes:    {}\r\n", s(ins, "detect_zeroes"));
        }
    }
    t
}

/// A time as local `YYYY-MM-DD HH:MM:SS`, by date(1).
fn local_date(secs: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-d", &format!("@{secs}"), "+%Y-%m-%d %H:%M:%S"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

const SNAPSHOT_HEADER: &str =
    "ID        TAG                 VM SIZE                DATE       VM CLOCK\r\n";

/// A snapshot row as QEMU 2.11's bdrv_snapshot_dump, from a SnapshotInfo.
/// (The machine has not run: the VM clock column is zero.)
fn snapshot_row(sn: &Value, id: &str) -> String {
    assert_eq!(i(sn, "vm-clock-sec"), 0, "{sn}");
    assert!(i(sn, "vm-clock-nsec") < 1_000_000, "{sn}");
    format!(
        "{:<10}{:<20}{:>7}{:>20}{:>15}\r\n",
        id,
        s(sn, "name"),
        human_size(i(sn, "vm-state-size")),
        local_date(i(sn, "date-sec")),
        "00:00:00.000"
    )
}

/// A vmm with a qcow2 disk on a virtio-blk device, a raw drive and a
/// second qcow2 drive; (process, client, directory).
fn create_image(dir: &TempDir, name: &str, format: &str, size: &str) -> PathBuf {
    let p = dir.path().join(name);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        format,
        p.to_str().expect("path"),
        size,
    ]);
    p
}

fn vmm_with_disks(dir: &TempDir) -> (VmmProcess, QmpClient) {
    let q0 = create_image(dir, "d0.qcow2", "qcow2", "64M");
    let raw = create_image(dir, "d1.raw", "raw", "1536");
    let q2 = create_image(dir, "d2.qcow2", "qcow2", "1M");
    let d0 = format!("file={},if=none,id=d0,format=qcow2", q0.display());
    let d1 = format!("file={},if=none,id=d1,format=raw", raw.display());
    let d2 = format!("file={},if=none,id=d2,format=qcow2", q2.display());
    let vmm = VmmProcess::start(&[
        "-S",
        "-nodefaults",
        "-drive",
        &d0,
        "-drive",
        &d1,
        "-drive",
        &d2,
        "-device",
        "virtio-blk-pci,drive=d0",
    ]);
    let c = vmm.qmp();
    (vmm, c)
}

#[test]
fn info_block_and_blockstats_format_their_queries() {
    let dir = TempDir::new("hmp-block");
    let (_vmm, mut c) = vmm_with_disks(&dir);
    c.ok(
        "blockdev-snapshot-internal-sync",
        json!({"device": "d0", "name": "first"}),
    );
    let blocks = c.ok("query-block", json!({}));
    let list = blocks.as_array().expect("list");
    assert_eq!(list.len(), 3);
    let expected: Vec<String> = list.iter().map(block_entry_text).collect();
    assert_eq!(c.hmp("info block"), expected.join("\r\n"));
    assert!(
        expected[0].contains("    Attached to:      "),
        "{}",
        expected[0]
    );
    assert!(expected[1].contains("Removable device: not locked, tray closed"));
    // One device: QEMU still puts the blank line of a list entry that is
    // not the first before it.
    assert_eq!(c.hmp("info block d0"), expected[0]);
    assert_eq!(c.hmp("info block d1"), format!("\r\n{}", expected[1]));

    // -v: the images, as qemu-img info shows them.
    let verbose = c.hmp("info block -v d0");
    let image = &list[0]["inserted"]["image"];
    let size = i(image, "virtual-size");
    let sn = &image["snapshots"][0];
    let mut images = format!(
        "\r\nImages:\r\nimage: {}\r\nfile format: qcow2\r\nvirtual size: {} ({size} bytes)\r\n\
         disk size: {}\r\ncluster_size: {}\r\nSnapshot list:\r\n{SNAPSHOT_HEADER}{}",
        s(image, "filename"),
        human_size(size),
        human_size(i(image, "actual-size")),
        i(image, "cluster-size"),
        snapshot_row(sn, s(sn, "id")),
    );
    let spec = &image["format-specific"]["data"];
    images += &format!(
        "Format specific information:\r\n    compat: {}\r\n    lazy refcounts: {}\r\n    \
         refcount bits: {}\r\n    corrupt: {}\r\n",
        s(spec, "compat"),
        spec["lazy-refcounts"],
        spec["refcount-bits"],
        spec["corrupt"]
    );
    assert_eq!(verbose, format!("{}{images}", expected[0]));
    assert_eq!(size, 64 << 20);
    assert!(verbose.contains("virtual size: 64M (67108864 bytes)\r\n"));
    let raw = c.hmp("info block -v d1");
    assert!(
        raw.contains("\r\nImages:\r\nimage: ")
            && raw
                .contains("\r\nfile format: raw\r\nvirtual size: 1.5K (1536 bytes)\r\ndisk size: "),
        "{raw}"
    );

    // -n: every node of query-named-block-nodes, the device line empty.
    let nodes = c.ok("query-named-block-nodes", json!({}));
    let expected_nodes: Vec<String> = nodes
        .as_array()
        .expect("list")
        .iter()
        .map(|n| {
            let mut t = format!("{}: {} ({}", s(n, "node-name"), s(n, "file"), s(n, "drv"));
            if n["ro"] == json!(true) {
                t += ", read-only";
            }
            t += ")\r\n    Cache mode:       ";
            t += if n["cache"]["writeback"] == json!(true) {
                "writeback"
            } else {
                "writethrough"
            };
            t + "\r\n"
        })
        .collect();
    assert_eq!(c.hmp("info block -n"), expected_nodes.join("\r\n"));
    let first_node = s(&nodes[0], "node-name").to_string();
    assert_eq!(
        c.hmp(&format!("info block {first_node}")),
        expected_nodes[0],
        "a node name that is no device shows the node"
    );
    assert_eq!(c.hmp("info block nosuch"), "");

    // Statistics (qemu-io bypasses the accounting, as in QEMU).
    c.hmp("qemu-io d0 \"write -P 0x5a 0 8k\"");
    let stats = c.ok("query-blockstats", json!({}));
    let expected: String = stats
        .as_array()
        .expect("list")
        .iter()
        .map(|b| {
            let st = &b["stats"];
            format!(
                "{}: rd_bytes={} wr_bytes={} rd_operations={} wr_operations={} \
                 flush_operations={} wr_total_time_ns={} rd_total_time_ns={} \
                 flush_total_time_ns={} rd_merged={} wr_merged={} idle_time_ns={}\r\n",
                s(b, "device"),
                st["rd_bytes"],
                st["wr_bytes"],
                st["rd_operations"],
                st["wr_operations"],
                st["flush_operations"],
                st["wr_total_time_ns"],
                st["rd_total_time_ns"],
                st["flush_total_time_ns"],
                st["rd_merged"],
                st["wr_merged"],
                st["idle_time_ns"].as_i64().unwrap_or(0)
            )
        })
        .collect();
    let text = c.hmp("info blockstats");
    // The times move between the two calls; compare all but them.
    let strip = |t: &str| -> String {
        t.split(' ')
            .filter(|w| !w.contains("time_ns="))
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(strip(&text), strip(&expected));
    assert!(text.starts_with("d0: rd_bytes=0 wr_bytes=0 "), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[test]
fn info_snapshots_lists_common_and_partial_snapshots() {
    let dir = TempDir::new("hmp-snap");
    let (_vmm, mut c) = vmm_with_disks(&dir);
    assert_eq!(
        c.hmp("info snapshots"),
        "There is no snapshot available.\r\n"
    );
    for (dev, name) in [("d0", "both"), ("d2", "both"), ("d0", "only0")] {
        c.ok(
            "blockdev-snapshot-internal-sync",
            json!({"device": dev, "name": name}),
        );
    }
    let blocks = c.ok("query-block", json!({}));
    let snaps = |dev: &str| -> Vec<Value> {
        blocks
            .as_array()
            .expect("list")
            .iter()
            .find(|b| b["device"] == dev)
            .and_then(|b| b["inserted"]["image"]["snapshots"].as_array().cloned())
            .unwrap_or_default()
    };
    let d0 = snaps("d0");
    assert_eq!(d0.len(), 2);
    assert_eq!(snaps("d2").len(), 1);
    let expected = format!(
        "List of snapshots present on all disks:\r\n{SNAPSHOT_HEADER}{}\r\n\
         List of partial (non-loadable) snapshots on 'd0':\r\n{SNAPSHOT_HEADER}{}",
        snapshot_row(&d0[0], "--"),
        snapshot_row(&d0[1], s(&d0[1], "id"))
    );
    assert_eq!(c.hmp("info snapshots"), expected);
    assert!(
        expected.contains("\r\n--        both                      0 "),
        "{expected}"
    );

    // A snapshot on one disk only: nothing is loadable.
    c.ok(
        "blockdev-snapshot-delete-internal-sync",
        json!({"device": "d2", "name": "both"}),
    );
    let text = c.hmp("info snapshots");
    assert!(
        text.starts_with("List of snapshots present on all disks:\r\nNone\r\n\r\nList of partial (non-loadable) snapshots on 'd0':\r\n"),
        "{text}"
    );

    // Raw disks only: none can take snapshots.
    let raw = create_image(&dir, "only.raw", "raw", "1M");
    let d = format!("file={},if=none,id=r0,format=raw", raw.display());
    let vmm = VmmProcess::start(&["-S", "-nodefaults", "-drive", &d]);
    let mut c = vmm.qmp();
    assert_eq!(
        c.hmp("info snapshots"),
        "No available block device supports snapshots\r\n"
    );
}

/// What `info pci` prints for one function of query-pci.
fn pci_text(d: &Value) -> String {
    let mut t = format!(
        "  Bus {:2}, device {:3}, function {}:\r\n    ",
        i(d, "bus"),
        i(d, "slot"),
        i(d, "function")
    );
    match d["class_info"]["desc"].as_str() {
        Some(desc) => t += desc,
        None => t += &format!("Class {:04}", i(&d["class_info"], "class")),
    }
    t += &format!(
        ": PCI device {:04x}:{:04x}\r\n",
        i(&d["id"], "vendor"),
        i(&d["id"], "device")
    );
    if let Some(irq) = d["irq"].as_i64() {
        t += &format!("      IRQ {irq}.\r\n");
    }
    for r in d["regions"].as_array().expect("regions") {
        let addr = i(r, "address") as u64;
        let last = addr.wrapping_add(i(r, "size") as u64).wrapping_sub(1);
        t += &format!("      BAR{}: ", i(r, "bar"));
        if s(r, "type") == "io" {
            t += &format!("I/O at 0x{addr:04x} [0x{last:04x}].\r\n");
        } else {
            t += &format!(
                "{} bit{} memory at 0x{addr:08x} [0x{last:08x}].\r\n",
                if r["mem_type_64"] == json!(true) {
                    64
                } else {
                    32
                },
                if r["prefetch"] == json!(true) {
                    " prefetchable"
                } else {
                    ""
                }
            );
        }
    }
    t + &format!("      id \"{}\"\r\n", s(d, "qdev_id"))
}

#[test]
fn info_pci_memdev_iothreads_and_migration_format_their_queries() {
    let vmm = VmmProcess::start(&[
        "-S",
        "-nodefaults",
        "-device",
        "virtio-blk-pci,id=vb0,drive=none0",
        "-drive",
        "if=none,id=none0,driver=null-co",
        "-object",
        "memory-backend-ram,id=mem0,size=32M",
        "-object",
        "iothread,id=io0",
    ]);
    let mut c = vmm.qmp();
    let pci = c.ok("query-pci", json!({}));
    let expected: String = pci
        .as_array()
        .expect("list")
        .iter()
        .flat_map(|bus| bus["devices"].as_array().expect("devices").iter())
        .map(pci_text)
        .collect();
    assert!(expected.contains("      id \"vb0\"\r\n"), "{expected}");
    assert!(
        expected.contains("    Host bridge: PCI device 8086:1237\r\n"),
        "{expected}"
    );
    assert_eq!(c.hmp("info pci"), expected);

    let memdev = c.ok("query-memdev", json!({}));
    let expected: String = memdev
        .as_array()
        .expect("list")
        .iter()
        .map(|m| {
            let nodes: Vec<String> = m["host-nodes"]
                .as_array()
                .expect("host-nodes")
                .iter()
                .map(|n| n.to_string())
                .collect();
            assert!(nodes.len() < 2, "no ranges to join here");
            format!(
                "memory backend: {}\r\n  size:  {}\r\n  merge: {}\r\n  dump: {}\r\n  prealloc: {}\r\n  policy: {}\r\n  host nodes: {}\r\n",
                s(m, "id"),
                m["size"],
                m["merge"],
                m["dump"],
                m["prealloc"],
                s(m, "policy"),
                nodes.join(",")
            )
        })
        .collect();
    assert!(
        expected.starts_with("memory backend: mem0\r\n  size:  33554432\r\n"),
        "{expected}"
    );
    assert_eq!(c.hmp("info memdev"), expected);

    let threads = c.ok("query-iothreads", json!({}));
    let t = &threads[0];
    assert_eq!(
        c.hmp("info iothreads"),
        format!(
            "io0:\r\n  thread_id={}\r\n  poll-max-ns={}\r\n  poll-grow={}\r\n  poll-shrink={}\r\n",
            t["thread-id"], t["poll-max-ns"], t["poll-grow"], t["poll-shrink"]
        )
    );

    // Migration: the formatting of each query is checked in
    // tests/migration.rs; here only that it is text.
    for line in [
        "info migrate",
        "info migrate_capabilities",
        "info migrate_parameters",
    ] {
        let text = c.hmp(line);
        assert!(!text.starts_with('{') && !text.is_empty(), "{line}: {text}");
    }
}

/// `/name (type)` lines for the composition tree under `path`, from
/// qom-list and qom-get.
fn qom_tree_text(c: &mut QmpClient, path: &str, name: &str, indent: usize, out: &mut String) {
    let ty = c.ok("qom-get", json!({"path": path, "property": "type"}));
    out.push_str(&format!(
        "{:indent$}/{name} ({})\r\n",
        "",
        ty.as_str().expect("type")
    ));
    let props = c.ok("qom-list", json!({ "path": path }));
    for p in props.as_array().expect("list") {
        if s(p, "type").starts_with("child<") {
            let child = s(p, "name");
            let sub = if path == "/" {
                format!("/{child}")
            } else {
                format!("{path}/{child}")
            };
            qom_tree_text(c, &sub, child, indent + 2, out);
        }
    }
}

#[test]
fn info_qom_tree_follows_qom_list() {
    let vmm = VmmProcess::start(&["-S", "-nodefaults", "-object", "iothread,id=io0"]);
    let mut c = vmm.qmp();
    let mut expected = String::new();
    qom_tree_text(&mut c, "/machine", "machine", 0, &mut expected);
    assert!(expected.starts_with("/machine ("), "{expected}");
    assert!(
        expected.contains("\r\n  /unattached (container)\r\n"),
        "{expected}"
    );
    assert_eq!(c.hmp("info qom-tree"), expected);
    let mut root = String::new();
    qom_tree_text(&mut c, "/", "", 0, &mut root);
    assert!(root.contains("\r\n    /io0 (iothread)\r\n"), "{root}");
    assert_eq!(c.hmp("info qom-tree /"), root);
    let mut objects = String::new();
    qom_tree_text(&mut c, "/objects", "objects", 0, &mut objects);
    assert_eq!(c.hmp("info qom-tree /objects"), objects);
    assert_eq!(
        c.hmp("info qom-tree /nosuch"),
        "Path '/nosuch' could not be resolved.\r\n"
    );
}

/// The lines of a monitor answer, without their `\r\n`.
fn lines(text: &str) -> Vec<&str> {
    text.split("\r\n").collect()
}

/// The lines of `info mtree` under `address-space: NAME` (or
/// `memory-region: NAME`), up to the blank line that ends them.
fn mtree_section<'a>(mtree: &'a str, header: &str) -> Vec<&'a str> {
    lines(mtree)
        .into_iter()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect()
}

/// query-pci's function at `slot`.0.
fn pci_function(c: &mut QmpClient, slot: i64) -> Value {
    let pci = c.ok("query-pci", json!({}));
    pci[0]["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["slot"] == slot && d["function"] == 0)
        .unwrap_or_else(|| panic!("no function at slot {slot}: {pci}"))
        .clone()
}

/// The `bar N: ...` lines `info qtree` prints for a query-pci function.
fn qtree_bar_lines(dev: &Value) -> Vec<String> {
    dev["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .map(|r| {
            let addr = r["address"].as_i64().expect("address") as u64;
            let last = addr.wrapping_add(r["size"].as_u64().expect("size") - 1);
            let kind = if r["type"] == "io" { "i/o" } else { "mem" };
            format!("        bar {}: {kind} at {addr:#x} [{last:#x}]", r["bar"])
        })
        .collect()
}

#[test]
fn info_qtree_and_mtree_show_the_machine_vmm_built() {
    let dir = TempDir::new("hmp-trees");
    let img = dir.path().join("disk.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).expect("image");
    let drive = format!("file={},if=virtio,id=d0,format=raw", img.display());
    // 4.5 GiB: 3 GiB below the PCI hole, the rest above 4 GiB.
    let vmm = VmmProcess::start(&["-S", "-m", "4608", "-drive", &drive]);
    let mut c = vmm.qmp();
    let blk = pci_function(&mut c, 2);
    // QEMU's default on pc: a transitional device.
    assert_eq!(blk["id"]["device"], 0x1001, "{blk}");

    let qtree = c.hmp("info qtree");
    let l = lines(&qtree);
    assert_eq!(l[..2], ["bus: main-system-bus", "  type System"]);
    for want in [
        "  dev: i440FX-pcihost, id \"\"",
        "    pci-hole64-size = 2147483648 (2 GiB)",
        "    bus: pci.0",
        "      type PCI",
        "      dev: virtio-blk-pci, id \"\"",
        "        addr = 02.0",
        "        vectors = 2 (0x2)",
        "          type virtio-pci-bus",
        "          dev: virtio-blk-device, id \"\"",
        "            drive = \"d0\"",
        "            logical_block_size = 512 (0x200)",
        "        class ISA bridge, addr 00:01.0, pci id 8086:7000 (sub 1af4:1100)",
        "          dev: isa-serial, id \"\"",
        "            iobase = 1016 (0x3f8)",
        "            isa irq 4",
        "      dev: i440FX, id \"\"",
    ] {
        assert!(l.contains(&want), "{want:?} missing:\n{qtree}");
    }
    // The class line and BARs match query-pci (not mapped before the
    // guest runs: QEMU shows them at all-ones).
    let class = format!(
        "        class {}, addr 00:02.0, pci id 1af4:{:04x} (sub ",
        blk["class_info"]["desc"].as_str().expect("desc"),
        blk["id"]["device"].as_i64().expect("device")
    );
    let at = l
        .iter()
        .position(|x| x.starts_with(&class))
        .unwrap_or_else(|| panic!("{class:?} missing:\n{qtree}"));
    assert!(
        l[at].ends_with("pci id 1af4:1001 (sub 1af4:0002)"),
        "{}",
        l[at]
    );
    let bars = qtree_bar_lines(&blk);
    assert_eq!(bars.len(), 3, "{blk}");
    assert_eq!(l[at + 1..at + 1 + bars.len()], bars[..]);
    assert_eq!(bars[0], "        bar 0: i/o at 0xffffffffffffffff [0x7e]");
    assert_eq!(bars[2], "        bar 4: mem at 0xffffffffffffffff [0x3ffe]");

    let mtree = c.hmp("info mtree");
    let memory = mtree_section(&mtree, "address-space: memory");
    assert_eq!(
        memory,
        [
            "  0000000000000000-ffffffffffffffff (prio 0, i/o): system",
            "    0000000000000000-00000000bfffffff (prio 0, i/o): alias ram-below-4g @pc.ram 0000000000000000-00000000bfffffff",
            "    0000000000000000-ffffffffffffffff (prio -1, i/o): pci",
            "    00000000fec00000-00000000fec00fff (prio 0, i/o): kvm-ioapic",
            "    00000000fee00000-00000000feefffff (prio 4096, i/o): kvm-apic-msi",
            "    0000000100000000-000000015fffffff (prio 0, i/o): alias ram-above-4g @pc.ram 00000000c0000000-000000011fffffff",
        ],
        "{mtree}"
    );
    assert_eq!(mtree_section(&mtree, "address-space: cpu-memory-0"), memory);
    assert_eq!(
        mtree_section(&mtree, "memory-region: pc.ram"),
        ["  0000000000000000-000000011fffffff (prio 0, ram): pc.ram"]
    );
    let io = mtree_section(&mtree, "address-space: I/O");
    for want in [
        "  0000000000000000-000000000000ffff (prio 0, i/o): io",
        "    00000000000003f8-00000000000003ff (prio 0, i/o): serial",
        "    0000000000000cf9-0000000000000cf9 (prio 1, i/o): piix3-reset-control",
    ] {
        assert!(io.contains(&want), "{want:?} missing:\n{mtree}");
    }
    // Bus masters stay off until the guest turns them on.
    assert_eq!(
        mtree_section(&mtree, "address-space: virtio-blk-pci"),
        [
            "  0000000000000000-ffffffffffffffff (prio 0, i/o): bus master container",
            "    0000000000000000-ffffffffffffffff (prio 0, i/o): alias bus master @system 0000000000000000-ffffffffffffffff [disabled]",
        ]
    );
    assert!(mtree.ends_with("\r\n\r\n"), "{mtree}");

    // The flat views: RAM split around the PCI hole (the part above
    // 4 GiB from pc.ram's offset 3 GiB), the APIC window over the PCI
    // space; every bus master, off, shares the empty view.
    let flat = c.hmp("info mtree -f");
    assert_eq!(
        mtree_section(&flat, "FlatView #0"),
        [
            " AS \"memory\", root: system",
            " AS \"cpu-memory-0\", root: system",
            " Root memory region: system",
            "  0000000000000000-00000000bfffffff (prio 0, ram): pc.ram",
            "  00000000fec00000-00000000fec00fff (prio 0, i/o): kvm-ioapic",
            "  00000000fee00000-00000000feefffff (prio 4096, i/o): kvm-apic-msi",
            "  0000000100000000-000000015fffffff (prio 0, ram): pc.ram @00000000c0000000",
        ],
        "{flat}"
    );
    let io = mtree_section(&flat, "FlatView #1");
    for want in [
        " AS \"I/O\", root: io",
        "  0000000000000cf8-0000000000000cf8 (prio 0, i/o): pci-conf-idx",
        "  0000000000000cf9-0000000000000cf9 (prio 1, i/o): piix3-reset-control",
        "  0000000000000cfa-0000000000000cfb (prio 0, i/o): pci-conf-idx @0000000000000002",
    ] {
        assert!(io.contains(&want), "{want:?} missing:\n{flat}");
    }
    let off = mtree_section(&flat, "FlatView #2");
    assert!(
        off.contains(&" AS \"virtio-blk-pci\", root: bus master container"),
        "{flat}"
    );
    assert_eq!(
        off[off.len() - 2..],
        [" Root memory region: (none)", "  No rendered FlatView"]
    );
    // -d: the same views, and a line saying vmm has no dispatch tree.
    let with_d = c.hmp("info mtree -f -d");
    assert_eq!(
        with_d,
        format!(
            "{flat}(-d: vmm has no dispatch tree; it looks addresses up in the flat views above)\r\n"
        )
    );
}

#[test]
fn info_qtree_and_mtree_follow_what_the_guest_programmed() {
    let dir = TempDir::new("hmp-trees-guest");
    let img = dir.path().join("disk.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).expect("image");
    let serial = dir.path().join("com1.log");
    let drive = format!("file={},if=none,id=d0,format=raw", img.display());
    let args = vmm_tests::guest_args(
        "virtio-blk,idle",
        &serial,
        &[
            "-drive",
            &drive,
            "-device",
            "virtio-blk-pci,drive=d0,id=vb0",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    let mut c = vmm.qmp();
    let out = wait_for_text(&serial, GUEST_TIMEOUT, |l| {
        l.contains("ok virtio-blk") || l.contains("fail")
    });
    assert!(out.contains("ok virtio-blk"), "{out}");
    let blk = pci_function(&mut c, 2);

    let qtree = c.hmp("info qtree");
    let l = lines(&qtree);
    assert!(
        l.contains(&"      dev: virtio-blk-pci, id \"vb0\""),
        "{qtree}"
    );
    assert!(
        l.contains(&"          dev: isa-debug-exit, id \"\""),
        "{qtree}"
    );
    assert!(l.contains(&"            iobase = 244 (0xf4)"), "{qtree}");
    let bars = qtree_bar_lines(&blk);
    for b in &bars {
        assert!(!b.contains("0xffffffffffffffff"), "not mapped: {blk}");
        assert!(l.contains(&b.as_str()), "{b:?} missing:\n{qtree}");
    }

    // The BARs where query-pci has them, in the PCI space, with the
    // virtio structures and the MSI-X table inside; the legacy register
    // block in the I/O space.
    let mtree = c.hmp("info mtree");
    let memory = mtree_section(&mtree, "address-space: memory");
    let io = mtree_section(&mtree, "address-space: I/O");
    for r in blk["regions"].as_array().expect("regions") {
        let addr = r["address"].as_u64().expect("address");
        if r["type"] == "io" {
            let last = addr + r["size"].as_u64().expect("size") - 1;
            let want = format!("    {addr:016x}-{last:016x} (prio 1, i/o): virtio-pci");
            assert!(io.contains(&want.as_str()), "{want:?} missing:\n{mtree}");
            continue;
        }
        let last = addr + r["size"].as_u64().expect("size") - 1;
        let name = if r["bar"] == 4 {
            "virtio-pci"
        } else {
            "virtio-blk-pci-msix"
        };
        let want = format!("      {addr:016x}-{last:016x} (prio 1, i/o): {name}");
        assert!(
            memory.contains(&want.as_str()),
            "{want:?} missing:\n{mtree}"
        );
        let first_child = if r["bar"] == 4 {
            format!(
                "        {addr:016x}-{:016x} (prio 0, i/o): virtio-pci-common",
                addr + 0xfff
            )
        } else {
            format!(
                "        {addr:016x}-{:016x} (prio 0, i/o): msix-table",
                addr + 0x1f
            )
        };
        assert!(
            memory.contains(&first_child.as_str()),
            "{first_child:?} missing:\n{mtree}"
        );
    }
    assert!(
        memory.contains(&"    0000000000000000-000000000fffffff (prio 0, i/o): alias ram-below-4g @pc.ram 0000000000000000-000000000fffffff"),
        "{mtree}"
    );
    assert!(
        mtree_section(&mtree, "address-space: I/O")
            .contains(&"    00000000000000f4-00000000000000f7 (prio 0, i/o): isa-debug-exit"),
        "{mtree}"
    );
    // The driver turned bus mastering on.
    assert_eq!(
        mtree_section(&mtree, "address-space: virtio-blk-pci")[1],
        "    0000000000000000-ffffffffffffffff (prio 0, i/o): alias bus master @system 0000000000000000-ffffffffffffffff"
    );
    // Its bus-master space now renders to the system view, and the
    // flat view has the virtio structures where the BAR put them.
    let flat = c.hmp("info mtree -f");
    let system = mtree_section(&flat, "FlatView #0");
    assert!(
        system.contains(&" AS \"virtio-blk-pci\", root: bus master container"),
        "{flat}"
    );
    let bar4 = blk["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .find(|r| r["bar"] == 4)
        .and_then(|r| r["address"].as_u64())
        .expect("BAR 4");
    let common = format!(
        "  {bar4:016x}-{:016x} (prio 0, i/o): virtio-pci-common",
        bar4 + 0xfff
    );
    assert!(
        system.contains(&common.as_str()),
        "{common:?} missing:\n{flat}"
    );
}

#[test]
fn info_qtree_and_mtree_without_a_machine() {
    let vmm = VmmProcess::start(&["-S", "-machine", "none"]);
    let mut c = vmm.qmp();
    assert_eq!(
        c.hmp("info qtree"),
        "bus: main-system-bus\r\n  type System\r\n"
    );
    assert_eq!(
        c.hmp("info mtree"),
        "address-space: memory\r\n\
         \x20 0000000000000000-ffffffffffffffff (prio 0, i/o): system\r\n\
         \r\n\
         address-space: I/O\r\n\
         \x20 0000000000000000-000000000000ffff (prio 0, i/o): io\r\n\
         \r\n"
    );
}

/// `info pic` as QEMU 2.11 prints the two kvm-i8259s (slave first).
fn pic_text(slave: &str, master: &str) -> String {
    format!("pic1: {slave}\r\npic0: {master}\r\n")
}

#[test]
fn info_pic_irq_numa_roms_usernet_show_the_machine() {
    let bios = "/usr/share/seabios/bios-256k.bin";
    assert!(Path::new(bios).exists(), "{bios}: run scripts/setup.sh");
    let vmm = VmmProcess::start(&["-nodefaults", "-bios", bios, "-S"]);
    let mut c = vmm.qmp();
    // Power-on state of KVM's PICs, before any guest code.
    let reset = "irr=00 imr=00 isr=00 hprio=0 irq_base=00 rr_sel=0 elcr=00 fnm=0";
    assert_eq!(c.hmp("info pic"), pic_text(reset, reset));
    assert_eq!(c.hmp("info irq"), "IRQ statistics for kvm-i8259:\r\n");
    assert_eq!(c.hmp("info numa"), "0 nodes\r\n");
    assert_eq!(
        c.hmp("info roms"),
        format!("addr=00000000fffc0000 size=0x040000 mem=rom name=\"{bios}\"\r\n")
    );
    assert_eq!(c.hmp("info usernet"), "");
    let help = c.hmp("help info");
    for sub in ["irq", "pic", "numa", "usernet", "roms"] {
        assert!(help.contains(&format!("info {sub}  -- ")), "{help}");
    }
    // SeaBIOS programs the PICs: vectors 0x08 and 0x70, as on a PC.
    assert_eq!(c.hmp("cont"), "");
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let pic = loop {
        let pic = c.hmp("info pic");
        if pic.contains("irq_base=70") && pic.contains("irq_base=08") {
            break pic;
        }
        assert!(Instant::now() < deadline, "SeaBIOS left the PICs: {pic}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let lines: Vec<&str> = pic.lines().collect();
    assert_eq!(lines.len(), 2, "{pic}");
    assert!(lines[0].starts_with("pic1: ") && lines[0].contains("irq_base=70"));
    assert!(lines[1].starts_with("pic0: ") && lines[1].contains("irq_base=08"));
}

#[test]
fn info_roms_is_empty_for_a_kernel_loaded_into_ram() {
    let dir = TempDir::new("hmp-roms");
    let serial = dir.path().join("com1.log");
    let args = vmm_tests::guest_args("idle", &serial, &["-S"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    let mut c = vmm.qmp();
    assert_eq!(c.hmp("info roms"), "");
    assert_eq!(c.hmp("info numa"), "0 nodes\r\n");
}

/// query-mice and `info mice` list the i8042's PS/2 mouse as QEMU 2.11's
/// pc lists it (index 2: the keyboard's handler is 1); `mouse_set` takes
/// mice only; without a board there is none.
#[test]
fn info_mice_lists_the_ps2_mouse() {
    let vmm = VmmProcess::start(&["-S"]);
    let mut c = vmm.qmp();
    assert_eq!(
        c.ok("query-mice", json!({})),
        json!([{"name": "QEMU PS/2 Mouse", "index": 2, "current": true, "absolute": false}])
    );
    assert_eq!(c.hmp("info mice"), "* Mouse #2: QEMU PS/2 Mouse\r\n");
    assert_eq!(c.hmp("mouse_set 2"), "");
    assert_eq!(
        c.hmp("mouse_set 1"),
        "Input device 'QEMU PS/2 Keyboard' is not a mouse\r\n"
    );
    assert_eq!(c.hmp("mouse_set 5"), "Mouse at index '5' not found\r\n");
    assert_eq!(c.hmp("info mice"), "* Mouse #2: QEMU PS/2 Mouse\r\n");
    // Before the guest runs, monitor input is dropped without a word;
    // QMP's input-send-event says why.
    assert_eq!(c.hmp("mouse_move 10 10"), "");
    assert_eq!(c.hmp("mouse_button 1"), "");
    let rel = json!({"events": [{"type": "rel", "data": {"axis": "x", "value": 1}}]});
    let (_, desc) = c.err("input-send-event", rel.clone());
    assert_eq!(desc, "VM not running");
    let help = c.hmp("help");
    for name in [
        "mouse_move dx dy [dz] -- ",
        "mouse_button state -- ",
        "mouse_set index -- ",
    ] {
        assert!(help.contains(name), "{help}");
    }

    let vmm = VmmProcess::start(&["-S", "-machine", "none"]);
    let mut c = vmm.qmp();
    assert_eq!(c.ok("query-mice", json!({})), json!([]));
    assert_eq!(c.hmp("info mice"), "No mouse devices connected\r\n");
    assert_eq!(c.hmp("mouse_set 2"), "Mouse at index '2' not found\r\n");
    c.ok("cont", json!({}));
    let (_, desc) = c.err("input-send-event", rel);
    assert_eq!(desc, "Input handler not found for event type rel");
}

/// The HMP forms of chardev-add, chardev-change and chardev-send-break
/// take `-chardev`'s options, with QEMU's texts.
#[test]
fn chardev_commands_take_chardev_options() {
    let vmm = VmmProcess::start(&["-S", "-nodefaults"]);
    let mut c = vmm.qmp();
    assert_eq!(c.hmp("chardev-add ringbuf,id=rb0,size=1024"), "");
    assert_eq!(c.hmp("ringbuf_write rb0 hello"), "");
    assert_eq!(c.hmp("ringbuf_read rb0 5"), "hello\r\n");
    assert_eq!(c.hmp("chardev-add null"), "chardev: no id specified\r\n");
    assert_eq!(
        c.hmp("chardev-add id=x"),
        "chardev: \"x\" missing backend\r\n"
    );
    assert_eq!(
        c.hmp("chardev-add null,id=n1,foo=1"),
        "Invalid parameter 'foo'\r\nParsing chardev args failed\r\n"
    );
    assert_eq!(
        c.hmp("chardev-change rb0 null,id=y"),
        "Unexpected 'id' parameter\r\n"
    );
    assert_eq!(c.hmp("chardev-change rb0 null"), "");
    let chardevs = c.ok("query-chardev", json!({}));
    let rb0 = chardevs
        .as_array()
        .expect("list")
        .iter()
        .find(|d| d["label"] == "rb0")
        .expect("rb0");
    assert_eq!(rb0["filename"], "null");
    let (_, desc) = c.err("chardev-send-break", json!({"id": "nope"}));
    assert_eq!(c.hmp("chardev-send-break nope"), format!("{desc}\r\n"));
}

/// HMP's internal snapshot commands act as their QMP counterparts.
#[test]
fn snapshot_blkdev_internal_takes_and_deletes() {
    let dir = TempDir::new("hmp-snap-blkdev");
    let img = create_image(&dir, "s.qcow2", "qcow2", "1M");
    let d = format!("file={},if=none,id=q0,format=qcow2", img.display());
    let vmm = VmmProcess::start(&["-S", "-nodefaults", "-drive", &d]);
    let mut c = vmm.qmp();
    assert_eq!(c.hmp("snapshot_blkdev_internal q0 first"), "");
    assert_eq!(c.snapshot_names(0), ["first"]);
    assert_eq!(c.hmp("snapshot_delete_blkdev_internal q0 first"), "");
    assert!(c.snapshot_names(0).is_empty());
    let (_, desc) = c.err(
        "blockdev-snapshot-delete-internal-sync",
        json!({"device": "q0", "name": "gone"}),
    );
    assert_eq!(
        c.hmp("snapshot_delete_blkdev_internal q0 gone"),
        format!("{desc}\r\n")
    );
}

/// `sum`, `gpa2hva`, `gpa2hpa`, `i` and `o` on a running guest, in
/// QEMU's words.
#[test]
fn memory_and_port_commands() {
    let dir = TempDir::new("hmp-mem-port");
    let serial = dir.path().join("com1.log");
    let args = vmm_tests::guest_args("idle", &serial, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    let mut c = vmm.qmp();
    wait_for_text(&serial, GUEST_TIMEOUT, |l| l.contains("vmm-guest: idle"));

    // sum: the BSD checksum of what pmemsave reads there.
    let dump = dir.path().join("low.bin");
    c.ok(
        "pmemsave",
        json!({"val": 0xe0000, "size": 0x100, "filename": dump.to_str()}),
    );
    let bytes = std::fs::read(&dump).expect("dump");
    let want = bytes
        .iter()
        .fold(0u16, |s, b| s.rotate_right(1).wrapping_add(u16::from(*b)));
    assert_eq!(c.hmp("sum 0xe0000 0x100"), format!("{want:05}\r\n"));

    let hva = c.hmp("gpa2hva 0x1000");
    assert!(
        hva.starts_with("Host virtual address for 0x1000 (pc.ram) is 0x"),
        "{hva}"
    );
    assert_eq!(
        c.hmp("gpa2hva 0xfec00000"),
        "Memory at address 0xfec00000is not RAM\r\n"
    );
    assert_eq!(
        c.hmp("gpa2hva 0xf0000000"),
        "No memory is mapped at address 0xf0000000\r\n"
    );
    let hpa = c.hmp("gpa2hpa 0x1000");
    assert!(
        hpa.starts_with("Host physical address for 0x1000 (pc.ram) is 0x"),
        "{hpa}"
    );

    // COM1's scratch register keeps what the monitor writes; a port no
    // device has reads as all ones; 0 prints as C's %#0*x prints it.
    assert_eq!(c.hmp("o /b 0x3ff 0x5a"), "");
    assert_eq!(c.hmp("i /b 0x3ff"), "portb[0x03ff] = 0x5a\r\n");
    // /w is a 4-byte access (portl), as in QEMU.
    assert_eq!(c.hmp("i /w 0x1234"), "portl[0x1234] = 0xffffffff\r\n");
    assert_eq!(c.hmp("o /b 0x3ff 0"), "");
    assert_eq!(c.hmp("i /b 0x3ff"), "portb[0x03ff] = 00\r\n");
    // ADDR.INDEX: the index goes to the port, the value comes from the
    // next one (the CMOS's register D: valid RAM and time).
    assert_eq!(c.hmp("i /b 0x70.0x0d"), "portb[0x0071] = 0x80\r\n");
}

/// HMP drive_add adds an `if=none` drive (for a device to use), as
/// QEMU's monitor does once the machine exists; drive_del takes a drive's
/// medium and name away, or deletes a node.
#[test]
fn drive_add_and_drive_del() {
    let dir = TempDir::new("hmp-drive-add");
    let img = create_image(&dir, "a.raw", "raw", "1M");
    let vmm = VmmProcess::start(&["-S", "-nodefaults"]);
    let mut c = vmm.qmp();
    let devices = |c: &mut QmpClient| -> Vec<String> {
        c.ok("query-block", json!({}))
            .as_array()
            .expect("list")
            .iter()
            .map(|b| b["device"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let add = format!(
        "drive_add 0 file={},if=none,id=d1,format=raw",
        img.display()
    );
    assert_eq!(c.hmp(&add), "OK\r\n");
    assert_eq!(devices(&mut c), ["d1"]);
    c.ok(
        "device_add",
        json!({"driver": "virtio-blk-pci", "drive": "d1", "id": "vb1"}),
    );
    // Only if=none: the default interface (IDE) is QEMU's type 1.
    let ide = format!("drive_add 0 file={},id=d2,format=raw", img.display());
    assert_eq!(c.hmp(&ide), "Can't hot-add drive to type 1\r\n");
    assert_eq!(
        c.hmp("drive_add 0 file=/nonexistent,if=none,id=d3,format=raw"),
        "Could not open '/nonexistent': No such file or directory\r\n"
    );
    assert_eq!(devices(&mut c), ["d1"]);

    // The device keeps a backend without medium or name.
    assert_eq!(c.hmp("drive_del d1"), "");
    assert!(devices(&mut c).is_empty());
    assert_eq!(c.hmp("drive_del d1"), "Device 'd1' not found\r\n");
    // A node goes as blockdev-del would take it.
    c.ok(
        "blockdev-add",
        json!({"driver": "null-co", "node-name": "n0"}),
    );
    assert_eq!(c.hmp("drive_del n0"), "");
    let nodes = c.ok("query-named-block-nodes", json!({}));
    assert!(
        !nodes
            .as_array()
            .expect("list")
            .iter()
            .any(|n| n["node-name"] == "n0"),
        "{nodes}"
    );

    // -n: a named node from flat options, owned by the monitor as
    // blockdev-add's are, so that blockdev-del removes it.
    assert_eq!(
        c.hmp("drive_add -n 0 driver=null-co"),
        "'node-name' needs to be specified\r\n"
    );
    let node = format!(
        "drive_add -n 0 node-name=n1,driver=raw,file.driver=file,file.filename={},read-only=on",
        img.display()
    );
    assert_eq!(c.hmp(&node), "");
    let nodes = c.ok("query-named-block-nodes", json!({}));
    let n1 = nodes
        .as_array()
        .expect("list")
        .iter()
        .find(|n| n["node-name"] == "n1")
        .unwrap_or_else(|| panic!("no n1 in {nodes}"));
    assert_eq!(n1["drv"], "raw");
    assert_eq!(n1["ro"], true);
    assert_eq!(n1["file"], json!(img.display().to_string()));
    assert_eq!(
        c.hmp(&node),
        "Duplicate node name\r\n",
        "a second node of the same name"
    );
    c.ok("blockdev-del", json!({"node-name": "n1"}));
}

/// The read/write mode of `pid`'s descriptor for `path` (O_ACCMODE of
/// its fdinfo flags).
fn access_mode(pid: u32, path: &Path) -> Option<u32> {
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if std::fs::read_link(fd.path()).ok().as_deref() != Some(path) {
            continue;
        }
        let info =
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_str()?))
                .ok()?;
        let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
        return u32::from_str_radix(flags.trim(), 8).ok().map(|f| f & 3);
    }
    None
}

/// HMP `commit` with `snapshot=on`: what the temporary overlay took goes
/// into the image, which is writable only for the time of it; a drive
/// without a backing file cannot commit.
#[test]
fn commit_writes_a_snapshot_overlay_into_the_image() {
    let dir = TempDir::new("hmp-commit");
    let img = create_image(&dir, "base.raw", "raw", "1M");
    let d = format!(
        "file={},if=none,id=d0,format=raw,snapshot=on",
        img.display()
    );
    let plain = create_image(&dir, "plain.raw", "raw", "1M");
    let p = format!("file={},if=none,id=r0,format=raw", plain.display());
    let qimg = create_image(&dir, "base.qcow2", "qcow2", "1M");
    let q = format!(
        "file={},if=none,id=q0,format=qcow2,snapshot=on",
        qimg.display()
    );
    let vmm = VmmProcess::start(&[
        "-S",
        "-nodefaults",
        "-drive",
        &d,
        "-drive",
        &p,
        "-drive",
        &q,
    ]);
    let mut c = vmm.qmp();
    let pid = vmm.child.id();
    assert_eq!(access_mode(pid, &img), Some(libc::O_RDONLY as u32));
    let out = c.hmp("qemu-io d0 \"write -P 0x5a 4096 64k\"");
    assert!(
        out.contains("wrote 65536/65536 bytes at offset 4096"),
        "{out}"
    );
    let base = || std::fs::read(&img).expect("image");
    assert!(base()[4096..4096 + 65536].iter().all(|b| *b == 0));

    assert_eq!(c.hmp("commit d0"), "");
    let b = base();
    assert!(b[4096..4096 + 65536].iter().all(|b| *b == 0x5a));
    assert!(b[..4096].iter().all(|b| *b == 0));
    // The overlay is empty again and reads through to the image.
    let out = c.hmp("qemu-io d0 \"read -P 0x5a 4096 64k\"");
    assert!(out.contains("read 65536/65536 bytes"), "{out}");
    assert_eq!(access_mode(pid, &img), Some(libc::O_RDONLY as u32));

    c.hmp("qemu-io d0 \"write -P 0x33 0 512\"");
    assert_eq!(c.hmp("commit d0"), "");
    assert!(base()[..512].iter().all(|b| *b == 0x33));
    // A qcow2 image under the overlay takes the data as well: the host's
    // qemu-io reads it back and qemu-img finds the image consistent.
    c.hmp("qemu-io q0 \"write -P 0x66 65536 128k\"");
    assert_eq!(c.hmp("commit all"), "");
    let q = qimg.to_str().expect("path");
    let out = std::process::Command::new("qemu-io")
        .args([
            "-U",
            "-r",
            "-f",
            "qcow2",
            "-c",
            "read -P 0x66 65536 128k",
            q,
        ])
        .output()
        .expect("qemu-io (scripts/setup.sh installs qemu-utils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("read 131072/131072 bytes"), "{text}");
    qemu_img(&["check", "-U", q]);
    assert_eq!(access_mode(pid, &qimg), Some(libc::O_RDONLY as u32));

    assert_eq!(
        c.hmp("commit r0"),
        "'commit' error for 'r0': Operation not supported\r\n"
    );
    assert_eq!(c.hmp("commit nope"), "Device 'nope' not found\r\n");
}

/// The mux's `C-a s` commits every drive, as QEMU's does.
#[test]
fn ctrl_a_s_on_a_mux_commits_the_drives() {
    let dir = TempDir::new("hmp-commit-mux");
    let img = create_image(&dir, "base.raw", "raw", "1M");
    let sock = dir.path().join("mux.sock");
    let d = format!(
        "file={},if=none,id=d0,format=raw,snapshot=on",
        img.display()
    );
    let chardev = format!("socket,id=m,path={},server,nowait,mux=on", sock.display());
    let vmm = VmmProcess::start(&[
        "-S",
        "-nodefaults",
        "-drive",
        &d,
        "-chardev",
        &chardev,
        "-serial",
        "chardev:m",
    ]);
    let mut c = vmm.qmp();
    c.hmp("qemu-io d0 \"write -P 0x77 0 4096\"");
    let mut s = UnixStream::connect(&sock).expect("connect");
    s.write_all(b"\x01s").expect("write");
    let deadline = Instant::now() + TIMEOUT;
    while !std::fs::read(&img).expect("image")[..4096]
        .iter()
        .all(|b| *b == 0x77)
    {
        assert!(Instant::now() < deadline, "C-a s did not commit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Hostile arguments to every command that leaves the machine as it is
/// (no reset, quit, stop, port or memory writes): the monitor answers each
/// and the guest keeps running. The choices come from a fixed sequence,
/// so a failure repeats.
#[test]
fn random_commands_leave_the_monitor_answering() {
    let dir = TempDir::new("hmp-random");
    let img = create_image(&dir, "r.raw", "raw", "1M");
    let serial = dir.path().join("com1.log");
    let d = format!("file={},if=none,id=d0,format=raw", img.display());
    let args = vmm_tests::guest_args(
        "idle",
        &serial,
        &["-drive", &d, "-device", "virtio-blk-pci,drive=d0,id=vb0"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    let mut c = vmm.qmp();
    wait_for_text(&serial, GUEST_TIMEOUT, |l| l.contains("vmm-guest: idle"));
    const CHANGES_THE_MACHINE: &[&str] = &[
        "quit",
        "q",
        "system_reset",
        "system_powerdown",
        "stop",
        "cont",
        "c",
        "o",
        "i",
        "drive_del",
        "commit",
        "x",
        "xp",
        "sum",
        "gpa2hpa",
        "memsave",
        "pmemsave",
        "chardev-remove",
        "chardev-change",
        "object_del",
        "device_del",
        "sendkey",
        "mouse_set",
        "screendump",
        "dump-guest-memory",
        "migrate",
        "savevm",
        "loadvm",
        "delvm",
        "logfile",
    ];
    let help = c.hmp("help");
    let names: Vec<&str> = help
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| n.split('|').next())
        .filter(|n| !CHANGES_THE_MACHINE.contains(n))
        .collect();
    const ARGS: &[&str] = &[
        "",
        "0",
        "-1",
        "0xffffffffffffffff",
        "99999999999999999999",
        "d0",
        "vb0",
        "/",
        "/x",
        "/100xg",
        "\"",
        "'",
        "\\",
        "a,b=c",
        "=",
        ",",
        "help",
        "?",
        "-f",
        "-n",
        "-v",
        "on",
        "off",
        "1.5",
        "1e309",
        "nan",
        "%s%n",
        "\t",
        "é",
        "id=x",
        "driver=virtio-blk-pci",
        "qom-type=iothread,id=z",
        "/machine",
        "//",
        "..",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for _ in 0..600 {
        let mut line = names[next(names.len())].to_string();
        for _ in 0..next(5) {
            line.push(' ');
            line.push_str(ARGS[next(ARGS.len())]);
        }
        let r = c.execute("human-monitor-command", json!({ "command-line": line }));
        assert!(
            r.get("return").is_some() || r.get("error").is_some(),
            "{line:?}: {r}"
        );
    }
    assert_eq!(c.ok("query-status", json!({}))["status"], "running");
}
