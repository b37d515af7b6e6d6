//! The KVM machine with the project's test guest (tests/guest): boot,
//! serial, debug-exit, SMP, NMI, RTC, guest reset and power-off, pause and
//! resume with real vCPUs, and memory reads through pmemsave.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vmm_tests::{guest_args, run_vmm, wait_for_text, QmpClient, TempDir, VmmProcess};

const GUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A running guest whose COM1 goes to a file.
struct Guest {
    vmm: VmmProcess,
    serial: PathBuf,
    _dir: TempDir,
}

impl Guest {
    fn start(test: &str, extra: &[&str]) -> Guest {
        let dir = TempDir::new("guest");
        let serial = dir.path().join("com1.log");
        let args = guest_args(test, &serial, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let vmm = VmmProcess::start(&args);
        Guest {
            vmm,
            serial,
            _dir: dir,
        }
    }

    fn wait_line(&self, needle: &str) -> String {
        wait_for_text(&self.serial, GUEST_TIMEOUT, |l| l.contains(needle))
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }
}

/// Runs the guest to its end and returns (exit status, serial output).
fn run_guest(test: &str, extra: &[&str]) -> (Option<i32>, String) {
    let dir = TempDir::new("run");
    let serial = dir.path().join("com1.log");
    let args = guest_args(test, &serial, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (st, _, err) = run_vmm(&args);
    assert!(err.is_empty() || !err.contains("panicked"), "{err}");
    (
        st.code(),
        std::fs::read_to_string(&serial).unwrap_or_default(),
    )
}

#[test]
fn the_guest_prints_on_com1_and_exits_through_debug_exit() {
    let (code, out) = run_guest("serial", &[]);
    assert!(out.contains("vmm-guest: ok serial"), "{out}");
    // Guest exit value 0 -> (0 << 1) | 1, as QEMU's isa-debug-exit.
    assert_eq!(code, Some(1), "{out}");
    let (code, out) = run_guest("nosuchtest", &[]);
    assert_eq!(code, Some((2 << 1) | 1), "{out}");
}

#[test]
fn every_cpu_of_smp_comes_up() {
    let (code, out) = run_guest("smp", &["-smp", "4"]);
    for n in 0..4 {
        assert!(out.contains(&format!("cpu {n} up")), "{out}");
    }
    assert!(out.contains("ok smp 4"), "{out}");
    assert_eq!(code, Some(1));
}

#[test]
fn the_rtc_reads_host_time() {
    let (code, out) = run_guest("rtc", &[]);
    assert_eq!(code, Some(1), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("ok rtc"))
        .expect("rtc line");
    assert!(
        line.ends_with("update-irq"),
        "the update-ended interrupt flag: {line}"
    );
    // `ok rtc YYYY-MM-DD hh:mm:ss ...`: the date is the host's (UTC).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let days = (now / 86400) as i64;
    let (y, m, d) = devices_civil(days);
    let today = format!("{y:04}-{m:02}-{d:02}");
    let (y2, m2, d2) = devices_civil(days - 1);
    let yesterday = format!("{y2:04}-{m2:02}-{d2:02}");
    assert!(
        line.contains(&today) || line.contains(&yesterday),
        "{line} vs {today}"
    );
}

/// Civil date of a day count since 1970 (to check the RTC).
fn devices_civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[test]
fn inject_nmi_reaches_the_guest() {
    let g = Guest::start("nmi,idle", &[]);
    let mut c = g.vmm.qmp();
    g.wait_line("nmi waiting");
    c.ok("inject-nmi", json!({}));
    let out = g.wait_line("ok nmi");
    assert!(!out.contains("fail nmi"), "{out}");
}

#[test]
fn acpi_power_off_is_a_guest_shutdown() {
    let mut g = Guest::start("acpi-shutdown", &["-S"]);
    let mut c = g.vmm.qmp();
    c.ok("cont", json!({}));
    let e = c.wait_event("SHUTDOWN");
    assert_eq!(e["data"], json!({"guest": true}));
    assert_eq!(g.vmm.wait_exit().code(), Some(0));
    assert!(
        g.output().contains("acpi-shutdown pm1a_cnt=0x604"),
        "{}",
        g.output()
    );
}

#[test]
fn with_no_shutdown_a_powered_off_guest_waits_for_reset_and_boots_again() {
    let g = Guest::start("acpi-shutdown", &["-S", "-no-shutdown"]);
    let mut c = g.vmm.qmp();
    c.ok("cont", json!({}));
    c.wait_event("SHUTDOWN");
    c.wait_event("STOP");
    assert_eq!(c.ok("query-status", json!({}))["status"], "shutdown");
    assert_eq!(
        c.err("cont", json!({})).1,
        "Resetting the Virtual Machine is required"
    );
    c.ok("system_reset", json!({}));
    c.wait_event("RESET");
    assert_eq!(c.ok("query-status", json!({}))["status"], "prelaunch");
    c.ok("cont", json!({}));
    // The guest starts from the beginning and powers off once more.
    c.wait_event("SHUTDOWN");
    let starts = g.output().matches("vmm-guest: start").count();
    assert_eq!(starts, 2, "{}", g.output());
}

#[test]
fn an_i8042_reset_is_a_guest_reset_and_the_guest_boots_again() {
    let mut g = Guest::start("reset", &["-S"]);
    let mut c = g.vmm.qmp();
    c.ok("cont", json!({}));
    let e = c.wait_event("RESET");
    assert_eq!(e["data"], json!({"guest": true}));
    // The guest boots again, sees it was reset, and reports success.
    assert_eq!(g.vmm.wait_exit().code(), Some(1));
    let out = g.output();
    assert_eq!(out.matches("vmm-guest: start").count(), 2, "{out}");
    assert!(out.contains("ok reset"), "{out}");
}

#[test]
fn with_no_reboot_a_guest_reset_shuts_down() {
    let mut g = Guest::start("reset", &["-S", "-no-reboot"]);
    let mut c = g.vmm.qmp();
    c.ok("cont", json!({}));
    assert_eq!(c.wait_event("SHUTDOWN")["data"], json!({"guest": true}));
    assert_eq!(g.vmm.wait_exit().code(), Some(0));
}

/// Reads the guest's counter through pmemsave.
fn counter(c: &mut QmpClient, dir: &Path, addr: u64) -> u64 {
    let file = dir.join("counter.bin");
    c.ok(
        "pmemsave",
        json!({"val": addr, "size": 8, "filename": file.to_str().expect("path")}),
    );
    let bytes = std::fs::read(&file).expect("pmemsave file");
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

/// Whether the counter moves away from `from` within the guest timeout.
fn wait_for_change(c: &mut QmpClient, dir: &Path, addr: u64, from: u64) -> bool {
    let deadline = std::time::Instant::now() + GUEST_TIMEOUT;
    while std::time::Instant::now() < deadline {
        if counter(c, dir, addr) != from {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn stop_freezes_the_vcpus_and_cont_resumes_them() {
    let g = Guest::start("count", &[]);
    let mut c = g.vmm.qmp();
    let line = g.wait_line("count addr=");
    let addr = line
        .lines()
        .find_map(|l| l.split("count addr=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|hex| u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok())
        .expect("counter address");
    let dir = TempDir::new("count");
    // The counter runs (a loaded host may take a while to schedule it).
    let a = counter(&mut c, dir.path(), addr);
    assert!(
        wait_for_change(&mut c, dir.path(), addr, a),
        "the counter never moved from {a}"
    );
    c.ok("stop", json!({}));
    c.wait_event("STOP");
    let frozen = counter(&mut c, dir.path(), addr);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        counter(&mut c, dir.path(), addr),
        frozen,
        "no guest instruction runs while paused"
    );
    // query-cpus while paused: one CPU, a real thread of the process.
    let cpus = c.ok("query-cpus", json!({}));
    let tid = cpus[0]["thread_id"].as_i64().expect("thread_id");
    assert!(Path::new(&format!("/proc/{}/task/{tid}", g.vmm.child.id())).exists());
    assert_eq!(cpus[0]["qom_path"], "/machine/unattached/device[0]");
    c.ok("cont", json!({}));
    c.wait_event("RESUME");
    assert!(
        wait_for_change(&mut c, dir.path(), addr, frozen),
        "the counter stayed at {frozen} after cont"
    );
}

#[test]
fn system_reset_reboots_the_guest() {
    let g = Guest::start("count", &[]);
    let mut c = g.vmm.qmp();
    g.wait_line("count addr=");
    c.ok("system_reset", json!({}));
    assert_eq!(c.wait_event("RESET")["data"], json!({"guest": false}));
    wait_for_text(&g.serial, GUEST_TIMEOUT, |_| {
        g.output().matches("vmm-guest: start").count() >= 2
    });
    assert_eq!(c.ok("query-status", json!({}))["status"], "running");
}

#[test]
fn query_cpus_lists_every_vcpu_thread() {
    let g = Guest::start("count", &["-smp", "2"]);
    let mut c = g.vmm.qmp();
    g.wait_line("count addr=");
    let cpus = c.ok("query-cpus", json!({}));
    let list = cpus.as_array().expect("list");
    assert_eq!(list.len(), 2);
    let tids: Vec<i64> = list
        .iter()
        .map(|c| c["thread_id"].as_i64().expect("tid"))
        .collect();
    assert_ne!(tids[0], tids[1]);
    for (i, c) in list.iter().enumerate() {
        assert_eq!(c["CPU"], i);
        assert_eq!(c["arch"], "x86");
        assert!(c["pc"].as_i64().is_some());
    }
    let hot = c.ok("query-hotpluggable-cpus", json!({}));
    assert_eq!(hot.as_array().map(Vec::len), Some(2));
}

#[test]
fn s3_suspends_and_system_wakeup_wakes_the_guest() {
    let mut g = Guest::start("acpi-suspend", &["-S"]);
    let mut c = g.vmm.qmp();
    c.ok("cont", json!({}));
    let e = c.wait_event("SUSPEND");
    assert!(e.get("data").is_none(), "{e}");
    assert_eq!(c.ok("query-status", json!({}))["status"], "suspended");
    // cont leaves a suspended guest alone, as QEMU does.
    c.ok("cont", json!({}));
    assert_eq!(c.ok("query-status", json!({}))["status"], "suspended");
    c.ok("system_wakeup", json!({}));
    assert_woke(&mut g, &mut c);
    assert!(!c.event_names().contains(&"RESET".to_string()));
}

/// The suspend guest, run until it suspended to S3.
fn suspended_guest() -> (Guest, QmpClient) {
    let g = Guest::start("acpi-suspend", &["-S"]);
    let mut c = g.vmm.qmp();
    c.ok("cont", json!({}));
    c.wait_event("SUSPEND");
    (g, c)
}

/// The suspended guest woke (WAKEUP) and reported it before ending.
fn assert_woke(g: &mut Guest, c: &mut QmpClient) {
    c.wait_event("WAKEUP");
    assert_eq!(g.vmm.wait_exit().code(), Some(1), "{}", g.output());
    assert!(
        g.output().contains("ok acpi-suspend woke"),
        "{}",
        g.output()
    );
}

/// Input wakes a suspended guest as QEMU's PS/2 devices ask: any key
/// does; the mouse only with a button held, which a mouse the guest
/// never enabled does not record.
#[test]
fn a_key_wakes_a_suspended_guest_and_a_disabled_mouse_does_not() {
    let (mut g, mut c) = suspended_guest();
    c.ok(
        "input-send-event",
        json!({"events": [{"type": "btn", "data": {"button": "left", "down": true}},
                          {"type": "rel", "data": {"axis": "x", "value": 3}}]}),
    );
    let r = c.ok(
        "human-monitor-command",
        json!({"command-line": "mouse_button 1"}),
    );
    assert_eq!(r, "");
    assert_eq!(c.ok("query-status", json!({}))["status"], "suspended");
    c.ok(
        "input-send-event",
        json!({"events": [{"type": "key", "data": {"down": true,
                           "key": {"type": "qcode", "data": "a"}}}]}),
    );
    assert_woke(&mut g, &mut c);
}

/// send-key goes through the same keyboard: a key wakes a suspended
/// guest, as QEMU's PS/2 keyboard asks.
#[test]
fn send_key_wakes_a_suspended_guest() {
    let (mut g, mut c) = suspended_guest();
    c.ok(
        "send-key",
        json!({"keys": [{"type": "qcode", "data": "a"}], "hold-time": 10}),
    );
    assert_woke(&mut g, &mut c);
}

#[test]
fn query_pci_answers_what_the_guest_sees_on_bus_0() {
    let g = Guest::start("pci,idle", &[]);
    let mut c = g.vmm.qmp();
    let out = g.wait_line("ok pci");
    let seen: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("vmm-guest: pci "))
        .map(str::to_string)
        .collect();
    let info = c.ok("query-pci", json!({}));
    let devices = info[0]["devices"].as_array().expect("devices");
    let reported: Vec<String> = devices
        .iter()
        .map(|d| {
            format!(
                "{:02x}.{} {:04x}:{:04x} class {:04x}",
                d["slot"].as_u64().unwrap_or(99),
                d["function"],
                d["id"]["vendor"].as_u64().unwrap_or(0),
                d["id"]["device"].as_u64().unwrap_or(0),
                d["class_info"]["class"].as_u64().unwrap_or(0)
            )
        })
        .collect();
    assert_eq!(seen, reported);
    // The pc machine's host bridge and ISA bridge, as QEMU's.
    assert_eq!(
        devices[0]["class_info"],
        json!({"class": 1536, "desc": "Host bridge"})
    );
    assert_eq!(devices[1]["id"], json!({"device": 28672, "vendor": 32902}));
    // The PIIX3 IDE and PIIX4 PM functions, as QEMU 2.11's pc answers
    // without firmware (no BAR assigned: address -1).
    assert_eq!(
        devices[2],
        json!({"bus": 0, "slot": 1, "function": 1, "qdev_id": "",
            "class_info": {"class": 257, "desc": "IDE controller"},
            "id": {"device": 28688, "vendor": 32902},
            "regions": [{"bar": 4, "type": "io", "address": -1, "size": 16}]})
    );
    assert_eq!(
        devices[3],
        json!({"bus": 0, "slot": 1, "function": 3, "qdev_id": "", "irq": 0,
            "class_info": {"class": 1664, "desc": "Bridge"},
            "id": {"device": 28947, "vendor": 32902}, "regions": []})
    );
}

#[test]
fn smp_topology_gives_qemus_apic_ids() {
    // Two sockets of three cores: the core field takes two bits, so the
    // second socket's APIC IDs start at 4, as in QEMU.
    let (code, out) = run_guest("smp", &["-smp", "6,sockets=2,cores=3,threads=1"]);
    assert_eq!(code, Some(1), "{out}");
    let mut ids: Vec<u32> = out
        .lines()
        .filter_map(|l| l.split("apic=").nth(1))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [0, 1, 2, 4, 5, 6], "{out}");
    assert!(out.contains("ok smp 6"), "{out}");
}

#[test]
fn qom_cpus_carry_their_apic_ids() {
    let g = Guest::start("idle", &["-S", "-smp", "6,sockets=2,cores=3,threads=1"]);
    let mut c = g.vmm.qmp();
    let id = c.ok(
        "qom-get",
        json!({"path": "/machine/unattached/device[3]", "property": "apic-id"}),
    );
    assert_eq!(id, 4);
}

#[test]
fn global_piix4_pm_disable_s3_takes_s3_out_of_the_dsdt() {
    let (code, out) = run_guest("acpi-suspend", &["-global", "PIIX4_PM.disable_s3=1"]);
    assert!(out.contains("no \\_S3 in the DSDT"), "{out}");
    assert_ne!(code, Some(1), "{out}");
    // disable_s3=0 is QEMU's default: S3 stays.
    let g = Guest::start(
        "acpi-suspend",
        &[
            "-S",
            "-global",
            "PIIX4_PM.disable_s3=0",
            "-global",
            "PIIX4_PM.disable_s4=1",
        ],
    );
    let mut c = g.vmm.qmp();
    // The PIIX4 PM function's properties say what the board has.
    let pm = "/machine/i440fx/pci.0/child[3]";
    let get = |c: &mut QmpClient, p: &str| c.ok("qom-get", json!({"path": pm, "property": p}));
    assert_eq!(get(&mut c, "disable_s3"), json!(0));
    assert_eq!(get(&mut c, "disable_s4"), json!(1));
    assert_eq!(
        c.ok("qom-get", json!({"path": pm, "property": "type"})),
        json!("PIIX4_PM")
    );
    c.ok("cont", json!({}));
    c.wait_event("SUSPEND");
    // QEMU's errors for what cannot be applied.
    let dir = TempDir::new("global");
    let serial = dir.path().join("com1.log");
    for (global, text) in [
        (
            "PIIX4_PM.foo=1",
            "can't apply global PIIX4_PM.foo=1: Property '.foo' not found",
        ),
        (
            "PIIX4_PM.disable_s3=yes",
            "can't apply global PIIX4_PM.disable_s3=yes: Parameter 'disable_s3' expects an integer",
        ),
        (
            "PIIX4_PM.smb_io_base=0xb100",
            "can't apply global PIIX4_PM.smb_io_base=0xb100: not available yet: PIIX4_PM property 'smb_io_base=0xb100' is not supported by vmm",
        ),
        (
            "kvm-pit.lost_tick_policy=slew",
            "Lost tick policy not supported.",
        ),
        (
            "PIIX4_PM.disable_s3=300",
            "can't apply global PIIX4_PM.disable_s3=300: Parameter 'disable_s3' expects uint8_t",
        ),
    ] {
        let args = guest_args("serial", &serial, &["-global", global]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (st, _, err) = run_vmm(&args);
        assert!(!st.success(), "{global}");
        assert!(err.contains(text), "{global}: {err}");
    }
    // What libvirt passes for <timer name='pit' tickpolicy='delay'/>:
    // KVM's in-kernel PIT does exactly that.
    let args = guest_args(
        "serial",
        &serial,
        &["-global", "kvm-pit.lost_tick_policy=delay"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (st, _, err) = run_vmm(&args);
    assert_eq!(st.code(), Some(1), "{err}");
    // discard: KVM's PIT stops re-injecting (KVM_REINJECT_CONTROL); the
    // QOM device says so.
    let g = Guest::start(
        "idle",
        &["-S", "-global", "kvm-pit.lost_tick_policy=discard"],
    );
    let mut c = g.vmm.qmp();
    let list = c.ok("qom-list", json!({"path": "/machine/unattached"}));
    let pit = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["type"] == "child<kvm-pit>")
        .and_then(|p| p["name"].as_str())
        .map(|n| format!("/machine/unattached/{n}"))
        .expect("kvm-pit in the tree");
    assert_eq!(
        c.ok(
            "qom-get",
            json!({"path": pit, "property": "lost_tick_policy"})
        ),
        json!("discard")
    );
    c.ok("cont", json!({}));
    drop(g);
    // A global no device uses is a warning, as in QEMU.
    let args = guest_args("serial", &serial, &["-global", "nosuchdevice.x=1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (st, _, err) = run_vmm(&args);
    assert_eq!(st.code(), Some(1));
    assert!(
        err.contains("global nosuchdevice.x has invalid class name"),
        "{err}"
    );
}

/// A plain x86-64 ELF (no PVH note), as a vmlinux is: one segment at
/// 2 MiB whose 64-bit code prints the command line it finds through the
/// zero page in %rsi (boot_params.cmd_line_ptr) on COM1, then writes 0x10
/// to isa-debug-exit.
fn elf64_kernel(dir: &Path) -> PathBuf {
    const LOAD: u64 = 0x20_0000;
    let code: [u8; 29] = [
        0x8b, 0xbe, 0x28, 0x02, 0x00, 0x00, // mov edi, [rsi + 0x228]
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0x8a, 0x07, // next: mov al, [rdi]
        0x84, 0xc0, // test al, al
        0x74, 0x06, // jz done
        0xee, // out dx, al
        0x48, 0xff, 0xc7, // inc rdi
        0xeb, 0xf4, // jmp next
        0xb0, 0x10, // done: mov al, 0x10
        0xe6, 0xf4, // out 0xf4, al
        0xf4, // hlt
        0xeb, 0xfd, // jmp hlt
    ];
    let mut elf = vec![0u8; 0x1000];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[6] = 1; // version
    elf[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
    elf[0x18..0x20].copy_from_slice(&LOAD.to_le_bytes()); // e_entry
    elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[0x34..0x36].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let ph = 64;
    elf[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    elf[ph + 8..ph + 16].copy_from_slice(&0x1000u64.to_le_bytes()); // p_offset
    elf[ph + 16..ph + 24].copy_from_slice(&LOAD.to_le_bytes()); // p_vaddr
    elf[ph + 24..ph + 32].copy_from_slice(&LOAD.to_le_bytes()); // p_paddr
    elf[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    elf[ph + 40..ph + 48].copy_from_slice(&0x1000u64.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&code);
    let path = dir.join("vmlinux-like.elf");
    std::fs::write(&path, &elf).expect("kernel");
    path
}

#[test]
fn a_plain_64_bit_elf_starts_in_long_mode_with_the_zero_page_in_rsi() {
    let dir = TempDir::new("elf64");
    let kernel = elf64_kernel(dir.path());
    let (st, out, err) = run_vmm(&[
        "-nodefaults",
        "-m",
        "128",
        "-kernel",
        &kernel.display().to_string(),
        "-append",
        "console=ttyS0 hello-from-the-zero-page",
        "-serial",
        "stdio",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
    ]);
    assert!(
        out.contains("console=ttyS0 hello-from-the-zero-page"),
        "{out}{err}"
    );
    assert_eq!(st.code(), Some(33), "{out}{err}");
}

/// Without firmware vmm leaves the MSRs a boot loader would: MTRRs on
/// with write-back as the default type, fast strings, the power-on PAT.
#[test]
fn the_guest_finds_mtrrs_on_fast_strings_and_the_power_on_pat() {
    let (code, out) = run_guest("msrs", &["-smp", "2"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("mtrr_def_type=0x806"), "{out}");
    assert!(out.contains("pat=0x7040600070406"), "{out}");
    let misc = out
        .split("misc_enable=0x")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(misc & 1, 1, "{out}");
}

/// A guest that runs code from where no RAM is leaves KVM unable to go
/// on: the VM stops in `internal-error` (STOP), `cont` is refused as QEMU
/// refuses it, and `system_reset` brings it back to boot again.
#[test]
fn a_kvm_internal_error_stops_the_vm_until_a_reset() {
    let g = Guest::start("exec-mmio", &[]);
    let mut c = g.vmm.qmp();
    // A STOP may come before this client is connected: poll the state.
    let wait_internal_error = |c: &mut QmpClient| {
        let deadline = std::time::Instant::now() + GUEST_TIMEOUT;
        while c.ok("query-status", json!({}))["status"] != "internal-error" {
            assert!(std::time::Instant::now() < deadline, "{}", g.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_internal_error(&mut c);
    let (class, desc) = c.err("cont", json!({}));
    assert_eq!(class, "GenericError");
    assert_eq!(desc, "Resetting the Virtual Machine is required");
    c.ok("system_reset", json!({}));
    assert_eq!(c.ok("query-status", json!({}))["status"], "prelaunch");
    c.ok("cont", json!({}));
    // The guest boots again, and fails the same way.
    wait_internal_error(&mut c);
    assert!(c.event_names().iter().any(|e| e == "STOP"), "no STOP event");
    let out = std::fs::read_to_string(&g.serial).unwrap_or_default();
    assert_eq!(out.matches("exec-mmio jumping").count(), 2, "{out}");
}

/// send-key presses keys on the i8042 keyboard and releases them after
/// the hold time, in scancode set 1 (the controller translates, as its
/// default command byte says); HMP's sendkey does the same.
#[test]
fn send_key_and_sendkey_reach_the_guest_as_scancodes() {
    let g = Guest::start("keyboard,idle", &[]);
    let mut c = g.vmm.qmp();
    g.wait_line("keyboard waiting");
    c.ok(
        "send-key",
        json!({"keys": [{"type": "qcode", "data": "shift"},
                        {"type": "qcode", "data": "a"}],
               "hold-time": 50}),
    );
    // Shift and a down, then up in the reverse order.
    let out = g.wait_line("keyboard got");
    assert!(out.contains("keyboard got 2a 1e 9e aa"), "{out}");
    let r = c.ok(
        "human-monitor-command",
        json!({"command-line": "sendkey ctrl_r-kp_enter 50"}),
    );
    assert_eq!(r, "");
    // Both keys carry the 0xe0 prefix.
    let out = g.wait_line("e0 1d e0 1c");
    assert!(
        out.contains("keyboard got e0 1d e0 1c e0 9c e0 9d"),
        "{out}"
    );
    // input-send-event: the keyboard takes key events; nothing takes
    // absolute motion, as QEMU answers (checked before any event goes).
    let abs = json!({"events": [
        {"type": "key", "data": {"down": true, "key": {"type": "qcode", "data": "c"}}},
        {"type": "abs", "data": {"axis": "x", "value": 5}}]});
    let (class, desc) = c.err("input-send-event", abs);
    assert_eq!(class, "GenericError");
    assert_eq!(desc, "Input handler not found for event type abs");
    let (class, _) = c.err(
        "input-send-event",
        json!({"device": "nosuch", "events": []}),
    );
    assert_eq!(class, "DeviceNotFound");
    let key = |down: bool, key: serde_json::Value| json!({"type": "key", "data": {"down": down, "key": key}});
    c.ok(
        "input-send-event",
        json!({"events": [
            key(true, json!({"type": "qcode", "data": "b"})),
            key(false, json!({"type": "number", "data": 0x30})),
        ]}),
    );
    let out = g.wait_line("ok keyboard");
    assert!(out.contains("keyboard got 30 b0"), "{out}");
    c.ok("stop", json!({}));
    let b = json!({"events": [key(true, json!({"type": "qcode", "data": "b"}))]});
    let (_, desc) = c.err("input-send-event", b);
    assert_eq!(desc, "VM not running");
}

/// The PS/2 mouse on the i8042's aux port: the guest checks the
/// controller's aux commands and the mouse's replies itself, enables it,
/// and prints the packets the host's input-send-event and HMP
/// mouse_move/mouse_button make, burst by burst (QEMU's encoding: y
/// upwards, +-127 per packet, the rest in further packets while the
/// queue has room, then at the next sync); after the IntelliMouse knock
/// packets carry the wheel.
#[test]
fn the_ps2_mouse_sends_the_packets_of_input_events() {
    let g = Guest::start("mouse,idle", &[]);
    let mut c = g.vmm.qmp();
    g.wait_line("mouse waiting");
    let rel =
        |axis: &str, value: i64| json!({"type": "rel", "data": {"axis": axis, "value": value}});
    let btn =
        |button: &str, down: bool| json!({"type": "btn", "data": {"button": button, "down": down}});
    let mut burst = 0;
    let mut expect = |c: &mut QmpClient, send: &dyn Fn(&mut QmpClient), bytes: &str| {
        burst += 1;
        send(c);
        let tag = format!("mouse got {burst}:");
        let out = g.wait_line(&tag);
        assert!(out.contains(&format!("{tag} {bytes}\n")), "{out}");
    };
    let events = |list: Vec<serde_json::Value>| {
        move |c: &mut QmpClient| {
            c.ok("input-send-event", json!({"events": list.clone()}));
        }
    };
    let hmp = |line: &'static str| {
        move |c: &mut QmpClient| {
            let r = c.ok("human-monitor-command", json!({"command-line": line}));
            assert_eq!(r, "");
        }
    };
    expect(&mut c, &events(vec![rel("x", 5), rel("y", -3)]), "08 05 03");
    expect(
        &mut c,
        &events(vec![rel("x", -10), rel("y", 20)]),
        "38 f6 ec",
    );
    // -1000: four clipped packets fill the queue to 12 bytes; the rest
    // goes with the next sync, here the left button's.
    expect(
        &mut c,
        &events(vec![rel("x", -1000)]),
        &["18 81 00"; 4].join(" "),
    );
    expect(
        &mut c,
        &events(vec![btn("left", true)]),
        "19 81 00 19 81 00 19 81 00 19 91 00",
    );
    // HMP's state 2 is the right button.
    expect(&mut c, &hmp("mouse_button 2"), "0b 00 00");
    expect(&mut c, &events(vec![btn("left", false)]), "0a 00 00");
    expect(&mut c, &hmp("mouse_button 0"), "08 00 00");
    expect(&mut c, &hmp("mouse_move 4 -4"), "08 04 04");
    g.wait_line("mouse wheel");
    // A wheel notch down counts +1; HMP's positive dz is a notch up (-1),
    // released in a second packet.
    expect(
        &mut c,
        &events(vec![btn("wheel-down", true), btn("wheel-down", false)]),
        "08 00 00 01",
    );
    expect(&mut c, &hmp("mouse_move 1 2 1"), "28 01 fe ff 08 00 00 00");
    g.wait_line("ok mouse");
    // The guest turned the mouse interrupt on: IRQ 12 fired.
    let irq = c.ok("human-monitor-command", json!({"command-line": "info irq"}));
    let irq = irq.as_str().unwrap_or_default();
    assert!(
        irq.lines().any(|l| l.starts_with("12: ") && l != "12: 0"),
        "{irq}"
    );
    // The PS/2 mouse is relative: nothing takes absolute motion.
    let abs = json!({"events": [{"type": "abs", "data": {"axis": "x", "value": 5}}]});
    let (class, desc) = c.err("input-send-event", abs);
    assert_eq!(class, "GenericError");
    assert_eq!(desc, "Input handler not found for event type abs");
}
