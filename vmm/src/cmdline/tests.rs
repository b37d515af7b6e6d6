//! Unit tests for the command line.

use serde_json::{json, Value};

use super::numbers::{parse_size, parse_u64, NumError};
use super::*;

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

fn run(words: &[&str]) -> Config {
    match parse_args(&argv(words)) {
        Ok(Action::Run(cfg)) => *cfg,
        other => panic!("{words:?}: expected Run, got {other:?}"),
    }
}

fn action(words: &[&str]) -> Action {
    match parse_args(&argv(words)) {
        Ok(a) => a,
        Err(e) => panic!("{words:?}: unexpected error {e}"),
    }
}

fn err(words: &[&str]) -> String {
    match parse_args(&argv(words)) {
        Err(e) => e.to_string(),
        Ok(a) => panic!("{words:?}: expected an error, got {a:?}"),
    }
}

fn first_line(words: &[&str]) -> String {
    err(words).lines().next().unwrap_or_default().to_string()
}

fn item<'a>(o: &'a Opts, k: &str) -> Option<&'a str> {
    o.get(k)
}

// ---- options and dashes ------------------------------------------------

#[test]
fn one_or_two_dashes() {
    assert_eq!(run(&["-m", "512"]).memory.size, 512 << 20);
    assert_eq!(run(&["--m", "512"]).memory.size, 512 << 20);
    assert!(run(&["--S"]).start_paused);
    assert!(run(&["-S", "--no-shutdown"]).no_shutdown);
}

#[test]
fn unknown_option_and_missing_argument() {
    assert_eq!(err(&["-foo"]), "-foo: invalid option");
    assert_eq!(err(&["--foo", "x"]), "--foo: invalid option");
    assert_eq!(err(&["-"]), "-: invalid option");
    assert_eq!(err(&["-m"]), "-m: requires an argument");
    assert_eq!(err(&["-S", "--chardev"]), "--chardev: requires an argument");
    // The first pass checks every option before any takes effect.
    assert_eq!(err(&["-version", "-bogus"]), "-bogus: invalid option");
    assert_eq!(err(&["-uuid", "x", "-bogus"]), "-bogus: invalid option");
}

#[test]
fn immediate_actions() {
    assert_eq!(action(&["-version"]), Action::Version);
    assert_eq!(action(&["-h"]), Action::Help);
    assert_eq!(action(&["--help"]), Action::Help);
    // -version acts where it stands: later errors are not reached.
    assert_eq!(action(&["-version", "-m", "foo"]), Action::Version);
    assert_eq!(
        first_line(&["-m", "foo", "-version"]),
        "-m foo: Parameter 'size' expects a non-negative number below 2^64"
    );
}

#[test]
fn help_actions() {
    assert_eq!(action(&["-device", "help"]), Action::ListDevices);
    assert_eq!(action(&["-device", "?"]), Action::ListDevices);
    assert_eq!(
        action(&["-device", "virtio-blk-pci,help"]),
        Action::DeviceHelp {
            driver: "virtio-blk-pci".into()
        }
    );
    assert_eq!(action(&["-machine", "help"]), Action::ListMachines);
    assert_eq!(action(&["-M", "?"]), Action::ListMachines);
    assert_eq!(
        action(&["-machine", "q35,help"]),
        Action::MachineHelp {
            machine: "q35".into()
        }
    );
    assert_eq!(action(&["-cpu", "help"]), Action::ListCpus);
    assert_eq!(action(&["-cpu", "?"]), Action::ListCpus);
    assert_eq!(action(&["-accel", "help"]), Action::ListAccels);
    assert_eq!(action(&["-chardev", "help"]), Action::ListChardevBackends);
    assert_eq!(action(&["-netdev", "help"]), Action::ListNetdevBackends);
    assert_eq!(action(&["-watchdog", "help"]), Action::ListWatchdogs);
    assert_eq!(action(&["-d", "help"]), Action::LogUsage);
    assert_eq!(action(&["-d", "int,bogus"]), Action::LogUsage);
    assert_eq!(
        run(&["-d", "int,guest_errors"]).log_items,
        ["int", "guest_errors"]
    );
}

#[test]
fn unsupported_options_are_recorded() {
    let c = run(&["-parallel", "none", "-soundhw", "all", "-S"]);
    let names: Vec<&str> = c.unsupported.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["parallel", "soundhw"]);
    assert!(!c.defaults.parallel);
    assert!(c.was_given("S"));
    assert_eq!(c.given.len(), 3);
    assert_eq!(c.given[0].location, "-parallel none");
    assert_eq!(
        err(&["-prom-env", "x=y"]),
        "-prom-env x=y: Option not supported for this target"
    );
}

// ---- QemuOpts syntax --------------------------------------------------

#[test]
fn implied_keys() {
    let c = run(&[
        "-chardev",
        "socket,id=x,path=/tmp/s",
        "-machine",
        "pc,accel=kvm",
        "-smp",
        "4,sockets=2",
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-blk-pci,drive=d0",
        "-object",
        "secret,id=s,data=x",
        "-name",
        "foo,debug-threads=on",
        "-drive",
        "file=/img,if=none,id=d0",
        "-display",
        "none",
        "-vnc",
        ":0",
        "-numa",
        "node,nodeid=0",
    ]);
    assert_eq!(c.chardevs[0].backend, "socket");
    assert_eq!(c.chardevs[0].id, "x");
    assert_eq!(
        c.chardevs[0].opts,
        [("path".to_string(), "/tmp/s".to_string())]
    );
    assert_eq!(c.machine.type_name, "pc");
    assert!(c.machine.type_given);
    assert_eq!(c.machine.accel, "kvm");
    assert_eq!((c.smp.cpus, c.smp.sockets), (4, 2));
    assert_eq!(item(&c.netdevs[0], "type"), Some("user"));
    assert_eq!(c.netdevs[0].id.as_deref(), Some("n0"));
    assert_eq!(item(&c.devices[0], "driver"), Some("virtio-blk-pci"));
    assert_eq!(item(&c.objects[0], "qom-type"), Some("secret"));
    assert_eq!(item(&c.objects[0], "data"), Some("x"));
    assert_eq!(c.name.guest.as_deref(), Some("foo"));
    assert!(c.name.debug_threads);
    assert_eq!(item(&c.drives[0], "file"), Some("/img"));
    assert_eq!(c.drives[0].id.as_deref(), Some("d0"));
    assert_eq!(c.display, DisplayKind::None);
    assert_eq!(item(&c.vnc[0], "vnc"), Some(":0"));
    assert_eq!(c.vnc[0].id.as_deref(), Some("default"));
    assert_eq!(item(&c.numa[0], "type"), Some("node"));
}

#[test]
fn drive_has_no_implied_key() {
    let c = run(&["-drive", "foo"]);
    assert_eq!(c.drives[0].items, [("foo".to_string(), "on".to_string())]);
    let c = run(&["disk.img"]);
    assert_eq!(item(&c.drives[0], "file"), Some("disk.img"));
    assert_eq!(item(&c.drives[0], "media"), Some("disk"));
    assert_eq!(item(&c.drives[0], "index"), Some("0"));
    let c = run(&["-cdrom", "x.iso"]);
    assert_eq!(item(&c.drives[0], "media"), Some("cdrom"));
    assert_eq!(item(&c.drives[0], "index"), Some("2"));
}

#[test]
fn comma_escapes() {
    let c = run(&["-chardev", "file,id=f,path=/tmp/a,,b,,,,c"]);
    assert_eq!(c.chardevs[0].get("path"), Some("/tmp/a,b,,c"));
    let c = run(&["-device", "a,,b,id=x"]);
    assert_eq!(item(&c.devices[0], "driver"), Some("a,b"));
    let c = run(&["-append", "console=ttyS0,,115200 x,y", "-kernel", "k"]);
    assert_eq!(c.append.as_deref(), Some("console=ttyS0,,115200 x,y"));
    let c = run(&["-kernel", "k", "-machine", "append=a,,b"]);
    assert_eq!(c.append.as_deref(), Some("a,b"));
}

#[test]
fn bare_flags() {
    let c = run(&["-chardev", "socket,id=m,path=/tmp/m,server,nowait"]);
    let ch = &c.chardevs[0];
    assert_eq!(ch.get_bool("server"), Ok(Some(true)));
    assert_eq!(ch.get_bool("wait"), Ok(Some(false)));
    let c = run(&[
        "-chardev",
        "socket,id=m,host=::1,port=4444,server=on,wait=off",
    ]);
    assert_eq!(c.chardevs[0].get_bool("server"), Ok(Some(true)));
    assert_eq!(c.chardevs[0].get("port"), Some("4444"));
}

#[test]
fn bad_values() {
    assert_eq!(
        err(&["-chardev", "socket,id=m,server=yes"]),
        "-chardev socket,id=m,server=yes: Parameter 'server' expects 'on' or 'off'"
    );
    assert_eq!(
        err(&["-chardev", "socket,id=m,bogus=1"]),
        "-chardev socket,id=m,bogus=1: Invalid parameter 'bogus'"
    );
    assert_eq!(
        err(&["-smp", "two"]),
        "-smp two: Parameter 'cpus' expects a number"
    );
    assert_eq!(
        err(&["-smp", "99999999999999999999"]),
        "-smp 99999999999999999999: Value '99999999999999999999' is too large for parameter 'cpus'"
    );
    assert_eq!(
        err(&["-name", "x,foo=bar"]),
        "-name x,foo=bar: Invalid parameter 'foo'"
    );
    assert_eq!(
        err(&["-chardev", "null,id=1x"]),
        "-chardev null,id=1x: Parameter 'id' expects an identifier\n\
         An identifier starts with a letter and has only letters, digits, '-', '.' and '_'."
    );
    assert_eq!(
        err(&["-chardev", "null,id=a", "-chardev", "null,id=a"]),
        "-chardev null,id=a: Duplicate ID 'a' for chardev"
    );
    assert_eq!(
        err(&["-watchdog-action", "explode"]),
        "-watchdog-action explode: unknown -watchdog-action parameter"
    );
    assert_eq!(
        err(&["-watchdog", "ib700", "-watchdog", "i6300esb"]),
        "-watchdog i6300esb: only one watchdog option may be given"
    );
    assert_eq!(
        first_line(&["-watchdog", "foo"]),
        "Unknown -watchdog device. Supported devices are:"
    );
    assert_eq!(
        err(&["-display", "sdl"]),
        "-display sdl: SDL support is disabled"
    );
    assert_eq!(
        err(&["-display", "bogus"]),
        "-display bogus: unknown display type"
    );
    assert_eq!(
        err(&["-rtc", "clock=moon"]),
        "-rtc clock=moon: invalid option value 'moon'"
    );
}

#[test]
fn watchdog_and_action() {
    let c = run(&["-watchdog", "I6300ESB", "-watchdog-action", "Inject-NMI"]);
    assert_eq!(c.watchdog.as_deref(), Some("I6300ESB"));
    assert_eq!(c.watchdog_action, WatchdogAction::InjectNmi);
    assert_eq!(run(&[]).watchdog_action, WatchdogAction::Reset);
}

// ---- numbers and sizes ------------------------------------------------

#[test]
fn size_parsing() {
    assert_eq!(parse_size("512"), Ok(512));
    assert_eq!(parse_size("4k"), Ok(4096));
    assert_eq!(parse_size("4K"), Ok(4096));
    assert_eq!(parse_size("512M"), Ok(512 << 20));
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    assert_eq!(parse_size("1.5G"), Ok(3 << 29));
    assert_eq!(parse_size("2T"), Ok(2 << 40));
    assert_eq!(parse_size("1P"), Ok(1 << 50));
    assert_eq!(parse_size("1E"), Ok(1 << 60));
    assert_eq!(parse_size("16E"), Err(NumError::Range));
    assert_eq!(parse_size("-1"), Err(NumError::Range));
    assert_eq!(parse_size("1.5"), Err(NumError::Invalid));
    assert_eq!(parse_size("12Q"), Err(NumError::Invalid));
    assert_eq!(parse_size("1GB"), Err(NumError::Invalid));
    assert_eq!(parse_size(""), Err(NumError::Invalid));
    assert_eq!(parse_u64("0x10"), Ok(16));
    assert_eq!(parse_u64("010"), Ok(8));
    assert_eq!(parse_u64("-1"), Ok(u64::MAX));
    assert_eq!(parse_u64("1a"), Err(NumError::Invalid));
    assert_eq!(parse_u64("18446744073709551616"), Err(NumError::Range));
}

#[test]
fn memory_option() {
    assert_eq!(run(&[]).memory.size, 128 << 20);
    assert_eq!(run(&["-m", "512"]).memory.size, 512 << 20);
    assert_eq!(run(&["-m", "512M"]).memory.size, 512 << 20);
    assert_eq!(run(&["-m", "1G"]).memory.size, 1 << 30);
    assert_eq!(run(&["-m", "1.5G"]).memory.size, 3 << 29);
    assert_eq!(run(&["-m", "size=2G"]).memory.size, 2 << 30);
    assert_eq!(run(&["-m", "0"]).memory.size, 128 << 20);
    assert_eq!(run(&["-m", "1001k"]).memory.size, 1_032_192);
    // Repeated -m options merge; the last size wins.
    assert_eq!(run(&["-m", "1G", "-m", "256"]).memory.size, 256 << 20);
    let m = run(&["-m", "1G,slots=4,maxmem=4G"]).memory;
    assert_eq!((m.size, m.maxmem, m.slots), (1 << 30, 4 << 30, 4));
    assert_eq!(
        err(&["-m", "foo"]),
        format!(
            "-m foo: Parameter 'size' expects a non-negative number below 2^64\n{}",
            super::opts::SIZE_HINT
        )
    );
    assert_eq!(
        first_line(&["-m", "1.5"]),
        "-m 1.5: Parameter 'size' expects a non-negative number below 2^64"
    );
    assert_eq!(
        err(&["-m", "-1"]),
        "-m -1: Value '-1' is out of range for parameter 'size'"
    );
    assert_eq!(
        err(&["-m", "99999999999999"]),
        "-m 99999999999999: too large 'size' option value"
    );
    assert_eq!(
        err(&["-m", "1G,slots=2"]),
        "-m 1G,slots=2: invalid -m option value: missing 'maxmem' option"
    );
    assert_eq!(
        err(&["-m", "1G,maxmem=512M"]),
        "-m 1G,maxmem=512M: invalid value of -m option maxmem: maximum memory size \
         (0x20000000) must be at least the initial memory size (0x40000000)"
    );
}

// ---- -smp ---------------------------------------------------------------

fn smp(arg: &str) -> (u32, u32, u32, u32, u32) {
    let s = run(&["-smp", arg]).smp;
    (s.cpus, s.sockets, s.cores, s.threads, s.maxcpus)
}

#[test]
fn smp_defaulting() {
    let s = run(&[]).smp;
    assert_eq!((s.cpus, s.cores, s.threads, s.maxcpus), (1, 1, 1, 1));
    assert_eq!(smp("4"), (4, 1, 1, 1, 4));
    assert_eq!(smp("4,sockets=2"), (4, 2, 2, 1, 4));
    assert_eq!(smp("8,sockets=2,threads=2"), (8, 2, 2, 2, 8));
    assert_eq!(smp("8,sockets=2,cores=2"), (8, 2, 2, 2, 8));
    assert_eq!(smp("sockets=2,cores=2,threads=2"), (8, 2, 2, 2, 8));
    assert_eq!(smp("2,maxcpus=8"), (2, 1, 1, 1, 8));
    assert_eq!(smp("cpus=4,cores=4,maxcpus=8"), (4, 1, 4, 1, 8));
    assert_eq!(smp("0"), (1, 1, 1, 1, 1));
    // -smp merges.
    let s = run(&["-smp", "4", "-smp", "maxcpus=8"]).smp;
    assert_eq!((s.cpus, s.maxcpus), (4, 8));
}

#[test]
fn smp_errors() {
    assert_eq!(
        err(&["-smp", "8,sockets=1,cores=2,threads=2"]),
        "cpu topology: sockets (1) * cores (2) * threads (2) < smp_cpus (8)"
    );
    assert_eq!(
        err(&["-smp", "4,maxcpus=2"]),
        "maxcpus must be equal to or greater than smp"
    );
    assert_eq!(
        err(&["-smp", "2,sockets=2,cores=2,threads=1"]),
        "cpu topology: sockets (2) * cores (2) * threads (1) > maxcpus (2)"
    );
    let s = run(&["-smp", "300"]).smp;
    assert_eq!(
        s.check_machine_limits("pc-i440fx-2.11", 1, 255)
            .map_err(|e| e.to_string()),
        Err(
            "Invalid SMP CPUs 300. The max CPUs supported by machine 'pc-i440fx-2.11' is 255"
                .into()
        )
    );
}

// ---- -uuid ---------------------------------------------------------------

#[test]
fn uuid_option() {
    let c = run(&["-uuid", "c7a5fdbd-edaf-9455-926a-d65c16db1809"]);
    assert_eq!(
        c.uuid,
        Some([
            0xc7, 0xa5, 0xfd, 0xbd, 0xed, 0xaf, 0x94, 0x55, 0x92, 0x6a, 0xd6, 0x5c, 0x16, 0xdb,
            0x18, 0x09
        ])
    );
    for bad in [
        "c7a5fdbd-edaf-9455-926a-d65c16db180",
        "c7a5fdbd-edaf-9455-926a-d65c16db18099",
        "c7a5fdbdxedaf-9455-926a-d65c16db1809",
        "g7a5fdbd-edaf-9455-926a-d65c16db1809",
        "",
    ] {
        assert_eq!(
            err(&["-uuid", bad]),
            format!("-uuid {bad}: failed to parse UUID string: wrong format")
        );
    }
    let c = run(&[
        "-smbios",
        "type=1,uuid=00000000-0000-0000-0000-000000000001",
    ]);
    assert_eq!(c.uuid.map(|u| u[15]), Some(1));
}

// ---- keyval and -blockdev -------------------------------------------------

#[test]
fn keyval_nesting_and_lists() {
    let v = keyval_parse(
        "driver=qcow2,node-name=n,file.driver=file,file.filename=/a,,b",
        None,
    );
    assert_eq!(
        v,
        Ok(json!({"driver": "qcow2", "node-name": "n",
                  "file": {"driver": "file", "filename": "/a,b"}}))
    );
    let v = keyval_parse(
        "driver=quorum,children.0=a,children.1=b,children.2.driver=c",
        None,
    );
    assert_eq!(
        v,
        Ok(json!({"driver": "quorum", "children": ["a", "b", {"driver": "c"}]}))
    );
    let v = keyval_parse("qcow2,file=f", Some("driver"));
    assert_eq!(v, Ok(json!({"driver": "qcow2", "file": "f"})));
    // The last of repeated keys wins.
    assert_eq!(keyval_parse("a=1,a=2", None), Ok(json!({"a": "2"})));
    assert_eq!(keyval_parse("", None), Ok(json!({})));
}

#[test]
fn keyval_errors() {
    let e = |s: &str| keyval_parse(s, None).map_err(|e| e.to_string());
    assert_eq!(e("a.1=x"), Err("Parameter 'a.0' missing".into()));
    assert_eq!(
        e("a.0=x,a.b=y"),
        Err("Parameters 'a.*' used inconsistently".into())
    );
    assert_eq!(
        e("a=1,a.b=2"),
        Err("Parameters 'a.*' used inconsistently".into())
    );
    assert_eq!(
        e("a.b=1,a=2"),
        Err("Parameters 'a.*' used inconsistently".into())
    );
    assert_eq!(e("a"), Err("Expected '=' after parameter 'a'".into()));
    assert_eq!(e("1=x"), Err("Invalid parameter '1'".into()));
    assert_eq!(e("a b=x"), Err("Invalid parameter 'a b'".into()));
    assert_eq!(e("a..b=x"), Err("Invalid parameter 'a..b'".into()));
    let long = "x".repeat(128);
    assert_eq!(
        e(&format!("{long}=1")),
        Err(format!("Parameter '{long}' is too long"))
    );
}

#[test]
fn keyval_scalars() {
    assert_eq!(keyval_bool("ro", "on"), Ok(true));
    assert_eq!(
        keyval_bool("ro", "yes").map_err(|e| e.to_string()),
        Err("Parameter 'ro' expects 'on' or 'off'".into())
    );
    assert_eq!(keyval_int("n", "-0x10"), Ok(-16));
    assert_eq!(keyval_uint("n", "010"), Ok(8));
    assert_eq!(
        keyval_int("n", "x").map_err(|e| e.to_string()),
        Err("Parameter 'n' expects integer".into())
    );
    assert_eq!(keyval_size("s", "1M"), Ok(1 << 20));
    assert_eq!(
        keyval_size("s", "1Q").map_err(|e| e.to_string()),
        Err("Parameter 's' expects size".into())
    );
    assert_eq!(keyval_number("f", "1.5"), Ok(1.5));
    assert_eq!(
        keyval_number("f", "x").map_err(|e| e.to_string()),
        Err("Invalid parameter type for 'f', expected: number".into())
    );
}

#[test]
fn blockdev_keyval_and_json() {
    let c = run(&[
        "-blockdev",
        "driver=file,node-name=f0,filename=/tmp/a.img,cache.direct=on",
        "-blockdev",
        "{\"driver\":\"qcow2\",\"node-name\":\"q0\",\"file\":\"f0\",\"read-only\":true}",
        "-blockdev",
        "{'driver': 'raw', 'file': {'driver': 'file', 'filename': 'it'}}",
        "-blockdev",
        "null-co,node-name=n",
    ]);
    assert_eq!(
        c.blockdevs[0].options,
        json!({"driver": "file", "node-name": "f0", "filename": "/tmp/a.img",
               "cache": {"direct": "on"}})
    );
    assert!(c.blockdevs[0].keyval);
    assert_eq!(c.blockdevs[1].options["read-only"], Value::Bool(true));
    assert!(!c.blockdevs[1].keyval);
    assert_eq!(c.blockdevs[2].options["file"]["filename"], json!("it"));
    assert_eq!(c.blockdevs[3].options["driver"], json!("null-co"));
    assert_eq!(
        first_line(&["-blockdev", "driver=file,a.1=x"]),
        "-blockdev driver=file,a.1=x: Parameter 'a.0' missing"
    );
    assert!(first_line(&["-blockdev", "{\"driver\":"])
        .starts_with("-blockdev {\"driver\":: JSON parse error"));
    let c = run(&["-blockdev", r#"{'driver':'file','filename':'a\'b"c'}"#]);
    assert_eq!(c.blockdevs[0].options["filename"], json!("a'b\"c"));
}

// ---- chardevs and monitors --------------------------------------------

fn chardev<'a>(c: &'a Config, id: &str) -> &'a ChardevSpec {
    match c.chardevs.iter().find(|s| s.id == id) {
        Some(s) => s,
        None => panic!("no chardev {id} in {:?}", c.chardevs),
    }
}

#[test]
fn qmp_unix_legacy() {
    let c = run(&["-qmp", "unix:/tmp/x,server,nowait"]);
    let ch = chardev(&c, "compat_monitor0");
    assert_eq!(ch.backend, "socket");
    assert_eq!(ch.get("path"), Some("/tmp/x"));
    assert_eq!(ch.get_bool("server"), Ok(Some(true)));
    assert_eq!(ch.get_bool("wait"), Ok(Some(false)));
    assert_eq!(c.monitors.len(), 1);
    let m = &c.monitors[0];
    assert_eq!(
        (m.chardev.as_str(), m.mode, m.pretty),
        ("compat_monitor0", MonitorMode::Control, false)
    );
    assert!(!c.defaults.monitor);
    let c = run(&["-qmp", "unix:/tmp/x,server=on,wait=off"]);
    assert_eq!(
        chardev(&c, "compat_monitor0").get_bool("wait"),
        Ok(Some(false))
    );
}

#[test]
fn qmp_tcp_stdio_and_pretty() {
    let c = run(&[
        "-qmp",
        "tcp:127.0.0.1:4444,server,nowait",
        "-qmp-pretty",
        "stdio",
        "-monitor",
        "telnet::5555,server,nowait",
    ]);
    let t = chardev(&c, "compat_monitor0");
    assert_eq!(t.backend, "socket");
    assert_eq!(
        (t.get("host"), t.get("port")),
        (Some("127.0.0.1"), Some("4444"))
    );
    assert_eq!(t.get_bool("server"), Ok(Some(true)));
    assert_eq!(chardev(&c, "compat_monitor1").backend, "stdio");
    assert!(c.monitors[1].pretty);
    let tel = chardev(&c, "compat_monitor2");
    assert_eq!((tel.get("host"), tel.get("port")), (Some(""), Some("5555")));
    assert_eq!(tel.get_bool("telnet"), Ok(Some(true)));
    assert_eq!(c.monitors[2].mode, MonitorMode::Readline);
}

#[test]
fn legacy_chardev_forms() {
    let c = run(&[
        "-nodefaults",
        "-monitor",
        "null",
        "-monitor",
        "file:/tmp/log",
        "-monitor",
        "pipe:/tmp/p",
        "-monitor",
        "udp:1.2.3.4:99@:100",
        "-monitor",
        "vc:80Cx24C",
        "-monitor",
        "pty",
    ]);
    let b: Vec<&str> = c.chardevs.iter().map(|s| s.backend.as_str()).collect();
    assert_eq!(b, ["null", "file", "pipe", "udp", "vc", "pty"]);
    assert_eq!(chardev(&c, "compat_monitor1").get("path"), Some("/tmp/log"));
    let u = chardev(&c, "compat_monitor3");
    assert_eq!(u.get("localaddr"), Some(""));
    assert_eq!(u.get("localport"), Some("100"));
    assert_eq!(chardev(&c, "compat_monitor4").get("cols"), Some("80"));
    assert_eq!(err(&["-qmp", "bogus"]), "-qmp bogus: parse error: bogus");
    assert_eq!(
        err(&["-qmp", "tcp:nohost"]),
        "-qmp tcp:nohost: parse error: tcp:nohost"
    );
    assert_eq!(
        err(&["-qmp", "unix:/x,bogus=1"]),
        "-qmp unix:/x,bogus=1: Invalid parameter 'bogus'"
    );
}

#[test]
fn mon_and_chardev() {
    let c = run(&[
        "-chardev",
        "socket,id=charmonitor,path=/run/m.sock,server,nowait",
        "-mon",
        "chardev=charmonitor,id=monitor,mode=control",
        "-chardev",
        "stdio,id=s",
        "-mon",
        "s,pretty=on",
        "-qmp",
        "chardev:s",
    ]);
    assert_eq!(c.monitors.len(), 3);
    assert_eq!(c.monitors[0].id.as_deref(), Some("monitor"));
    assert_eq!(c.monitors[0].mode, MonitorMode::Control);
    assert_eq!(c.monitors[1].chardev, "s");
    assert_eq!(c.monitors[1].mode, MonitorMode::Readline);
    assert!(c.monitors[1].pretty);
    assert_eq!(c.monitors[2].chardev, "s");
    assert_eq!(c.chardevs.len(), 2);
    assert_eq!(
        err(&["-mon", "chardev=nope"]),
        "-mon chardev=nope: chardev \"nope\" not found"
    );
    assert_eq!(
        err(&["-chardev", "null,id=c", "-mon", "c,mode=fancy"]),
        "-mon c,mode=fancy: unknown monitor mode \"fancy\""
    );
    assert_eq!(
        err(&["-chardev", "socket,path=/x"]),
        "-chardev socket,path=/x: chardev: no id specified"
    );
    assert_eq!(
        err(&["-chardev", "id=x"]),
        "-chardev id=x: chardev: \"x\" missing backend"
    );
    let c = run(&[
        "-chardev",
        "ringbuf,id=r,size=64k",
        "-chardev",
        "tty,id=t,path=/dev/ttyS0",
    ]);
    assert_eq!(chardev(&c, "r").get_size("size"), Ok(Some(65536)));
    assert_eq!(chardev(&c, "t").backend, "serial");
}

#[test]
fn serial_ports() {
    let c = run(&[
        "-serial",
        "mon:stdio",
        "-serial",
        "none",
        "-serial",
        "file:/tmp/s1",
    ]);
    assert_eq!(c.serials.len(), 2);
    let SerialTarget::New(s0) = &c.serials[0].target else {
        panic!("serial0 should be a new chardev");
    };
    assert_eq!(s0.id, "serial0");
    assert_eq!(s0.backend, "stdio");
    assert_eq!(s0.get_bool("mux"), Ok(Some(true)));
    assert_eq!(s0.get_bool("signal"), Ok(Some(false)));
    assert_eq!(c.monitors.len(), 1);
    assert_eq!(c.monitors[0].chardev, "serial0");
    assert_eq!(c.monitors[0].mode, MonitorMode::Readline);
    let SerialTarget::New(s1) = &c.serials[1].target else {
        panic!("serial1 should be a new chardev");
    };
    assert_eq!(
        (s1.id.as_str(), s1.get("path")),
        ("serial1", Some("/tmp/s1"))
    );
    let c = run(&["-chardev", "pty,id=p", "-serial", "chardev:p"]);
    assert_eq!(c.serials[0].target, SerialTarget::Existing("p".into()));
    assert_eq!(
        err(&["-serial", "bogus"]),
        "-serial bogus: could not connect serial device to character backend 'bogus'"
    );
    assert_eq!(
        err(&[
            "-serial", "null", "-serial", "null", "-serial", "null", "-serial", "null", "-serial",
            "null"
        ]),
        "-serial null: too many serial ports"
    );
}

#[test]
fn default_consoles() {
    // -nographic: serial and monitor share stdio.
    let c = run(&["-nographic"]);
    assert_eq!(c.serials[0].arg, "mon:stdio");
    assert_eq!(c.monitors.len(), 1);
    assert!(!c.machine.graphics);
    assert_eq!(c.display, DisplayKind::None);
    // With a QMP monitor, only the serial port goes to stdio.
    let c = run(&["-nographic", "-qmp", "stdio"]);
    assert_eq!(c.serials[0].arg, "stdio");
    assert_eq!(c.monitors.len(), 1);
    // Without -nographic, the defaults go to a virtual console.
    let c = run(&[]);
    assert_eq!(c.serials[0].arg, "vc:80Cx24C");
    assert_eq!(chardev(&c, "compat_monitor0").backend, "vc");
    let c = run(&["-nodefaults"]);
    assert!(c.serials.is_empty() && c.monitors.is_empty() && c.chardevs.is_empty());
    let c = run(&[
        "-device",
        "isa-serial,chardev=x",
        "-nodefaults",
        "-chardev",
        "null,id=x",
    ]);
    assert!(!c.defaults.serial);
    assert_eq!(
        err(&["-nographic", "-daemonize"]),
        "-nographic cannot be used with -daemonize"
    );
    assert!(run(&["-nographic", "-daemonize", "-nodefaults"]).daemonize);
}

// ---- machine and accelerator ---------------------------------------------

#[test]
fn machine_and_accel() {
    let c = run(&[
        "-enable-kvm",
        "-M",
        "q35",
        "-machine",
        "usb=yes,dump-guest-core=off,vmport=off",
    ]);
    assert_eq!(c.machine.type_name, "q35");
    assert_eq!(c.machine.accel, "kvm");
    assert!(c.machine.usb);
    assert!(!c.machine.dump_guest_core);
    assert_eq!(c.machine.vmport, OnOffAuto::Off);
    let c = run(&["-machine", "accel=kvm:tcg", "-accel", "kvm", "-usb"]);
    assert_eq!(c.machine.accel, "kvm");
    assert!(c.machine.usb);
    let c = run(&["-machine", "accel=tcg:kvm,kernel_irqchip=split"]);
    assert_eq!(c.machine.accel, "kvm");
    assert_eq!(c.warnings, ["tcg not supported for this target"]);
    assert_eq!(c.machine.kernel_irqchip, Some(OnOffSplit::Split));
    assert_eq!(run(&[]).machine.type_name, "pc");
    assert_eq!(
        err(&["-machine", "accel=tcg"]),
        "-machine accel=tcg: No accelerator found\ntcg not supported for this target"
    );
    assert_eq!(
        first_line(&["-accel", "tcg"]),
        "-machine accel=tcg: No accelerator found"
    );
    assert_eq!(
        first_line(&["-no-kvm"]),
        "-machine accel=tcg: No accelerator found"
    );
    assert_eq!(
        err(&["-machine", "pc,foo=bar"]),
        "Property '.foo' not found"
    );
    assert_eq!(
        err(&["-machine", "usb=maybe"]),
        "Invalid parameter type for 'usb', expected: boolean"
    );
    assert_eq!(
        err(&["-machine", "vmport=sometimes"]),
        "Invalid parameter 'sometimes'"
    );
}

#[test]
fn kernel_options() {
    let c = run(&[
        "-kernel",
        "/k",
        "-initrd",
        "/i",
        "-append",
        "console=ttyS0",
        "-bios",
        "/b",
    ]);
    assert_eq!(c.kernel.as_deref(), Some("/k"));
    assert_eq!(c.initrd.as_deref(), Some("/i"));
    assert_eq!(c.append.as_deref(), Some("console=ttyS0"));
    assert_eq!(c.bios.as_deref(), Some("/b"));
    assert_eq!(
        err(&["-append", "x"]),
        "-append only allowed with -kernel option"
    );
    assert_eq!(
        err(&["-initrd", "x"]),
        "-initrd only allowed with -kernel option"
    );
}

// ---- other groups ------------------------------------------------------

#[test]
fn misc_groups() {
    let c = run(&[
        "-rtc",
        "base=2006-06-17T16:01:21,clock=vm,driftfix=slew",
        "-boot",
        "order=cd,menu=on,strict=on",
        "-global",
        "kvm-pit.lost_tick_policy=discard",
        "-global",
        "driver=isa-fdc,property=driveA,value=d0",
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-realtime",
        "mlock=off",
        "-msg",
        "timestamp=on",
        "-trace",
        "events=/tmp/ev,file=/tmp/tr",
        "-trace",
        "virtio_*",
        "-smbios",
        "type=0,vendor=v,release=1.2",
        "-incoming",
        "defer",
        "-pidfile",
        "/run/p",
        "-D",
        "/tmp/log",
        "-k",
        "de",
        "-no-hpet",
        "-no-acpi",
        "-mem-prealloc",
        "-mem-path",
        "/dev/hugepages",
        "-no-user-config",
        "-daemonize",
        "-nodefaults",
    ]);
    assert_eq!(
        c.rtc.base,
        RtcBase::Date {
            year: 2006,
            month: 6,
            day: 17,
            hour: 16,
            minute: 1,
            second: 21
        }
    );
    assert_eq!(
        (c.rtc.clock, c.rtc.driftfix),
        (RtcClock::Vm, RtcDriftFix::Slew)
    );
    assert_eq!(c.boot.order.as_deref(), Some("cd"));
    assert_eq!((c.boot.menu, c.boot.strict), (Some(true), true));
    assert_eq!(c.globals[0].driver, "kvm-pit");
    assert_eq!(c.globals[0].property, "lost_tick_policy");
    assert_eq!(c.globals[0].value, "discard");
    assert_eq!(c.globals[1].property, "driveA");
    let s = c.sandbox.as_ref().map(|s| (s.enable, s.spawn.clone()));
    assert_eq!(s, Some((true, Some("deny".into()))));
    assert!(!c.realtime_mlock);
    assert!(c.msg_timestamp);
    assert_eq!(c.trace.events, ["/tmp/ev"]);
    assert_eq!(c.trace.enable, ["virtio_*"]);
    assert_eq!(c.trace.file, None);
    assert_eq!(c.smbios.len(), 1);
    assert_eq!(c.incoming.as_deref(), Some("defer"));
    assert!(c.no_hpet && c.no_acpi && c.mem_prealloc && c.no_user_config && c.daemonize);
    assert_eq!(c.keyboard_layout.as_deref(), Some("de"));
    assert_eq!(
        err(&["-rtc", "base=yesterday"]),
        "-rtc base=yesterday: invalid date format\nvalid formats: '2006-06-17T16:01:21' or '2006-06-17'"
    );
    assert_eq!(err(&["-boot", "order=cz"]), "Invalid boot device 'z'");
    assert_eq!(err(&["-boot", "cdc"]), "Boot device 'c' was given twice");
    assert_eq!(
        err(&["-sandbox", "on,spawn=maybe"]),
        "-sandbox on,spawn=maybe: invalid argument for spawn"
    );
    assert_eq!(
        err(&["-smbios", "type=1,bogus=x"]),
        "-smbios type=1,bogus=x: Invalid parameter 'bogus'"
    );
    assert_eq!(
        err(&["-smbios", "vendor=x"]),
        "-smbios vendor=x: Must specify type= or file="
    );
    assert_eq!(
        err(&["-smbios", "type=9"]),
        "-smbios type=9: Don't know how to build fields for SMBIOS type 9"
    );
    assert_eq!(
        err(&["-object", "secret,data=x"]),
        "-object secret,data=x: Parameter 'id' is missing"
    );
    assert_eq!(
        err(&["-netdev", "user"]),
        "-netdev user: Parameter 'id' is missing"
    );
    assert_eq!(
        err(&["-device", "id=x"]),
        "-device id=x: Parameter 'driver' is missing"
    );
}

#[test]
fn vnc_ids() {
    let c = run(&[
        "-vnc",
        ":0",
        "-vnc",
        "unix:/tmp/v,id=mine",
        "-display",
        "vnc=:1",
    ]);
    let ids: Vec<_> = c
        .vnc
        .iter()
        .map(|v| v.id.clone().unwrap_or_default())
        .collect();
    assert_eq!(ids, ["default", "mine", "vnc2"]);
    assert_eq!(
        err(&["-vnc", ":0,password=maybe"]),
        "-vnc :0,password=maybe: Parameter 'password' expects 'on' or 'off'"
    );
    assert_eq!(
        err(&["-display", "vnc"]),
        "-display vnc: VNC requires a display argument vnc=<display>"
    );
}

// ---- the option table against QEMU 2.11.0 -----------------------------------

/// The reply QEMU 2.11.0 gave to `query-command-line-options`.
fn oracle_groups() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/oracle/qemu-2.11.0-x86_64.replies"
    );
    let text = std::fs::read_to_string(path).expect("oracle file readable");
    let objects: Vec<Value> = text
        .split("\n\n")
        .filter(|c| !c.trim().is_empty())
        .map(|c| serde_json::from_str(c).expect("oracle chunk is JSON"))
        .collect();
    let i = objects
        .iter()
        .position(|o| o["execute"] == "query-command-line-options")
        .expect("request present");
    match &objects[i + 1]["return"] {
        Value::Array(groups) => groups.clone(),
        other => panic!("unexpected reply {other}"),
    }
}

#[test]
fn table_matches_oracle() {
    let oracle = oracle_groups();
    let ours = command_line_options();
    // Same relative order as QEMU.
    let oracle_names: Vec<&str> = oracle.iter().filter_map(|g| g["option"].as_str()).collect();
    let our_names: Vec<&str> = ours.iter().map(|g| g.option.as_str()).collect();
    let filtered: Vec<&str> = oracle_names
        .iter()
        .copied()
        .filter(|n| our_names.contains(n))
        .collect();
    assert_eq!(filtered, our_names);
    for g in &ours {
        let theirs = oracle
            .iter()
            .find(|o| o["option"] == g.option.as_str())
            .expect("group present in oracle");
        let params = theirs["parameters"].as_array().expect("parameters array");
        assert_eq!(params.len(), g.parameters.len(), "{}", g.option);
        for (p, q) in g.parameters.iter().zip(params) {
            assert_eq!(
                p.name,
                q["name"].as_str().unwrap_or_default(),
                "{}",
                g.option
            );
            assert_eq!(
                p.kind.as_str(),
                q["type"].as_str().unwrap_or_default(),
                "{}.{}",
                g.option,
                p.name
            );
            assert_eq!(
                p.help.as_deref(),
                q["help"].as_str(),
                "{}.{}",
                g.option,
                p.name
            );
            assert_eq!(
                p.default.as_deref(),
                q["default"].as_str(),
                "{}.{}",
                g.option,
                p.name
            );
        }
        // The JSON form matches the recording too.
        let mut ours_json = g.to_json();
        let mut theirs_json = theirs.clone();
        sort_keys(&mut ours_json);
        sort_keys(&mut theirs_json);
        assert_eq!(ours_json, theirs_json);
    }
}

fn sort_keys(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = std::mem::take(m).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, mut val) in entries {
                sort_keys(&mut val);
                m.insert(k, val);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

#[test]
fn every_group_option_is_in_the_option_table() {
    for name in [
        "machine", "smp", "m", "name", "chardev", "mon", "drive", "device", "netdev", "object",
        "boot", "rtc", "realtime", "msg", "sandbox", "smbios", "numa", "trace", "vnc", "global",
        "accel",
    ] {
        assert!(
            OPTIONS.iter().any(|o| o.name == name && o.has_arg),
            "{name}"
        );
    }
}

#[test]
fn libvirt_style_command_line() {
    let words = [
        "-name", "guest=vm1,debug-threads=on",
        "-S",
        "-object", "secret,id=masterKey0,format=raw,file=/var/lib/libvirt/qemu/domain-1-vm1/master-key.aes",
        "-machine", "pc-i440fx-2.11,accel=kvm,usb=off,vmport=off,dump-guest-core=off",
        "-cpu", "host",
        "-m", "1024",
        "-realtime", "mlock=off",
        "-smp", "2,sockets=2,cores=1,threads=1",
        "-uuid", "8e0ed4a6-1b62-4f6a-b3b4-9a6a0d3c1e57",
        "-no-user-config",
        "-nodefaults",
        "-chardev", "socket,id=charmonitor,path=/var/lib/libvirt/qemu/domain-1-vm1/monitor.sock,server,nowait",
        "-mon", "chardev=charmonitor,id=monitor,mode=control",
        "-rtc", "base=utc,driftfix=slew",
        "-global", "kvm-pit.lost_tick_policy=delay",
        "-no-hpet",
        "-no-shutdown",
        "-global", "PIIX4_PM.disable_s3=1",
        "-boot", "strict=on",
        "-device", "piix3-usb-uhci,id=usb,bus=pci.0,addr=0x1.0x2",
        "-drive", "file=/var/lib/libvirt/images/vm1.qcow2,format=qcow2,if=none,id=drive-virtio-disk0",
        "-device", "virtio-blk-pci,scsi=off,bus=pci.0,addr=0x4,drive=drive-virtio-disk0,id=virtio-disk0,bootindex=1",
        "-netdev", "tap,fd=26,id=hostnet0,vhost=on,vhostfd=28",
        "-device", "virtio-net-pci,netdev=hostnet0,id=net0,mac=52:54:00:12:34:56,bus=pci.0,addr=0x3",
        "-chardev", "pty,id=charserial0",
        "-device", "isa-serial,chardev=charserial0,id=serial0",
        "-vnc", "127.0.0.1:0",
        "-device", "cirrus-vga,id=video0,bus=pci.0,addr=0x2",
        "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-msg", "timestamp=on",
    ];
    let c = run(&words);
    assert!(c.start_paused && c.no_shutdown && c.nodefaults);
    assert_eq!(c.machine.type_name, "pc-i440fx-2.11");
    assert_eq!(c.memory.size, 1 << 30);
    assert_eq!(c.smp.cpus, 2);
    assert_eq!(c.monitors.len(), 1);
    assert_eq!(c.monitors[0].mode, MonitorMode::Control);
    assert_eq!(c.chardevs.len(), 2);
    assert!(c.serials.is_empty());
    assert_eq!(c.devices.len(), 5);
    assert_eq!(c.devices[1].id.as_deref(), Some("virtio-disk0"));
    assert_eq!(c.drives[0].id.as_deref(), Some("drive-virtio-disk0"));
    assert_eq!(c.netdevs[0].id.as_deref(), Some("hostnet0"));
    assert!(c.unsupported.is_empty());
}

#[test]
fn flags_empty_values_and_none() {
    let c = run(&[
        "-chardev",
        "socket,id=x,path=/p,nodelay",
        "-m",
        "",
        "-smp",
        "",
        "-monitor",
        "none",
        "-vnc",
        "none",
    ]);
    assert_eq!(c.chardevs[0].get("delay"), Some("off"));
    assert_eq!(c.memory.size, 128 << 20);
    assert_eq!(c.smp.cpus, 1);
    assert!(c.monitors.is_empty());
    let c = run(&[
        "-qmp",
        "unix:/tmp/x,server,nowait",
        "-qmp",
        "unix:/tmp/y,server,nowait",
        "-nodefaults",
    ]);
    assert_eq!(c.chardevs[1].id, "compat_monitor1");
}
