//! The QEMU command line as a user types it: errors on stderr with exit
//! status 1, `-version`, `-help`, options whose subsystem has not landed,
//! `-pidfile` and `-daemonize`.

use serde_json::json;
use vmm_tests::{run_vmm, QmpClient, TempDir, VmmProcess};

#[test]
fn unknown_option_exits_1_with_qemu_text() {
    let (st, _, err) = run_vmm(&["-bogus"]);
    assert_eq!(st.code(), Some(1));
    assert_eq!(err, "vmm: -bogus: invalid option\n");
}

#[test]
fn missing_argument_and_bad_values() {
    let (st, _, err) = run_vmm(&["-m"]);
    assert_eq!(st.code(), Some(1));
    assert_eq!(err, "vmm: -m: requires an argument\n");
    let (st, _, err) = run_vmm(&["-uuid", "not-a-uuid"]);
    assert_eq!(st.code(), Some(1));
    assert!(
        err.contains("failed to parse UUID string: wrong format"),
        "{err}"
    );
    let (st, _, err) = run_vmm(&["-watchdog-action", "explode"]);
    assert_eq!(st.code(), Some(1));
    assert!(err.contains("unknown -watchdog-action parameter"), "{err}");
    let (st, _, err) = run_vmm(&["-machine", "nosuch"]);
    assert_eq!(st.code(), Some(1));
    assert!(err.contains("unsupported machine type"), "{err}");
}

#[test]
fn double_dash_options_work_like_single_dash() {
    let (st, out, _) = run_vmm(&["--version"]);
    assert_eq!(st.code(), Some(0));
    assert!(
        out.starts_with("QEMU emulator version 2.11.50 (vmm "),
        "{out}"
    );
}

#[test]
fn help_lists_the_options() {
    let (st, out, _) = run_vmm(&["-help"]);
    assert_eq!(st.code(), Some(0));
    for opt in ["-qmp", "-chardev", "-machine", "-no-shutdown"] {
        assert!(
            out.lines().any(|l| l.starts_with(opt)),
            "{opt} missing from help"
        );
    }
    let (st, out, _) = run_vmm(&["-machine", "help"]);
    assert_eq!(st.code(), Some(0));
    assert!(
        out.contains("pc-i440fx-2.11") && out.contains("(default)"),
        "{out}"
    );
}

#[test]
fn options_whose_subsystem_has_not_landed_fail_naming_the_option() {
    for args in [
        &["-device", "e1000,netdev=n0"][..],
        // IDE has not landed (if=none and if=virtio have).
        &["-drive", "file=/dev/null,format=raw,if=ide,id=d0"],
        &["-netdev", "user,id=n0"],
    ] {
        let (st, _, err) = run_vmm(args);
        assert_eq!(st.code(), Some(1), "{args:?}");
        assert!(
            err.starts_with(&format!("vmm: {}", args[0])),
            "{args:?}: {err}"
        );
        assert!(err.contains("not available yet"), "{err}");
    }
}

#[test]
fn virtio_blk_needs_a_drive_that_exists() {
    let (st, _, err) = run_vmm(&["-nodefaults", "-device", "virtio-blk-pci"]);
    assert_eq!(st.code(), Some(1));
    assert_eq!(err, "vmm: -device virtio-blk-pci: drive property not set\n");
    let (st, _, err) = run_vmm(&["-nodefaults", "-device", "virtio-blk-pci,drive=nope"]);
    assert_eq!(st.code(), Some(1));
    assert!(
        err.contains("Property 'virtio-blk-device.drive' can't find value 'nope'"),
        "{err}"
    );
}

#[test]
fn a_missing_kernel_is_reported_as_qemu_does() {
    let (st, _, err) = run_vmm(&["-kernel", "/nonexistent/vmlinux"]);
    assert_eq!(st.code(), Some(1));
    assert!(
        err.starts_with("vmm: could not load kernel '/nonexistent/vmlinux'"),
        "{err}"
    );
}

#[test]
fn pidfile_holds_the_pid_and_a_lock() {
    let dir = TempDir::new("pid");
    let pidfile = dir.path().join("vmm.pid");
    let pf = pidfile.to_str().expect("path").to_string();
    let vmm = VmmProcess::start(&["-S", "-pidfile", &pf]);
    let text = std::fs::read_to_string(&pidfile).expect("pidfile");
    assert_eq!(text.trim(), vmm.child.id().to_string());
    // A second instance with the same pid file is refused.
    let second = TempDir::new("pid2");
    let sock = second.path().join("q.sock");
    let (st, _, err) = run_vmm(&[
        "-S",
        "-pidfile",
        &pf,
        "-qmp",
        &format!("unix:{},server,nowait", sock.display()),
    ]);
    assert_eq!(st.code(), Some(1));
    assert!(err.contains("Could not acquire pid file"), "{err}");
}

#[test]
fn daemonize_returns_once_the_monitor_is_up() {
    let dir = TempDir::new("daemon");
    let sock = dir.path().join("d.sock");
    let pidfile = dir.path().join("d.pid");
    let (st, _, err) = run_vmm(&[
        "-S",
        "-daemonize",
        "-nodefaults",
        "-pidfile",
        pidfile.to_str().expect("path"),
        "-qmp",
        &format!("unix:{},server,nowait", sock.display()),
    ]);
    assert_eq!(st.code(), Some(0), "{err}");
    // The parent returned only after the socket was listening.
    let mut c = QmpClient::connect(&sock);
    c.negotiate();
    assert_eq!(c.ok("query-status", json!({}))["status"], "prelaunch");
    let pid = std::fs::read_to_string(&pidfile).expect("pidfile");
    assert!(pid.trim().parse::<u32>().is_ok());
    c.ok("quit", json!({}));
    assert!(c.read_message().is_none_or(|m| m["event"] == "SHUTDOWN"));
}

#[test]
fn device_help_lists_the_device_types_and_their_properties() {
    let (st, _, err) = run_vmm(&["-device", "help"]);
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(err.contains("Storage devices:"), "{err}");
    assert!(
        err.contains("name \"virtio-blk-pci\", bus PCI, alias \"virtio-blk\""),
        "{err}"
    );
    let (st, _, err) = run_vmm(&["-device", "virtio-blk-pci,help"]);
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("virtio-blk-pci.drive=str")),
        "{err}"
    );
    assert!(err.contains("virtio-blk-pci.num-queues=uint16"), "{err}");
    let (st, _, err) = run_vmm(&["-device", "nosuch,help"]);
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(err.contains("Device 'nosuch' not found"), "{err}");
}
