//! QEMU 2.11's run states and the commands that move between them, with
//! the events QEMU emits.

use serde_json::json;
use vmm_tests::VmmProcess;

fn status(c: &mut vmm_tests::QmpClient) -> String {
    let s = c.ok("query-status", json!({}));
    assert_eq!(s["running"], s["status"] == "running", "{s}");
    assert_eq!(s["singlestep"], false);
    s["status"].as_str().expect("status").to_string()
}

#[test]
fn dash_s_starts_in_prelaunch_and_cont_resumes() {
    let vmm = VmmProcess::start(&["-S"]);
    let mut c = vmm.qmp();
    assert_eq!(status(&mut c), "prelaunch");
    // stop while not running changes nothing and says nothing.
    c.ok("stop", json!({}));
    assert_eq!(status(&mut c), "prelaunch");
    c.ok("cont", json!({}));
    assert_eq!(c.wait_event("RESUME")["event"], "RESUME");
    assert_eq!(status(&mut c), "running");
    // cont while running emits nothing.
    c.ok("cont", json!({}));
    c.ok("stop", json!({}));
    c.wait_event("STOP");
    assert_eq!(status(&mut c), "paused");
    assert!(c.events.is_empty(), "{:?}", c.event_names());
}

#[test]
fn without_dash_s_the_machine_runs() {
    let vmm = VmmProcess::start(&[]);
    let mut c = vmm.qmp();
    assert_eq!(status(&mut c), "running");
}

#[test]
fn system_reset_emits_reset_and_a_paused_machine_goes_to_prelaunch() {
    let vmm = VmmProcess::start(&[]);
    let mut c = vmm.qmp();
    c.ok("system_reset", json!({}));
    assert_eq!(c.wait_event("RESET")["data"], json!({"guest": false}));
    assert_eq!(status(&mut c), "running");
    c.ok("stop", json!({}));
    c.wait_event("STOP");
    c.ok("system_reset", json!({}));
    c.wait_event("RESET");
    assert_eq!(status(&mut c), "prelaunch");
    c.ok("cont", json!({}));
    c.wait_event("RESUME");
    assert_eq!(status(&mut c), "running");
}

#[test]
fn system_powerdown_emits_powerdown() {
    let vmm = VmmProcess::start(&[]);
    let mut c = vmm.qmp();
    c.ok("system_powerdown", json!({}));
    let e = c.wait_event("POWERDOWN");
    assert!(e.get("data").is_none(), "{e}");
}

#[test]
fn system_wakeup_of_a_machine_that_is_not_suspended_does_nothing() {
    let vmm = VmmProcess::start(&[]);
    let mut c = vmm.qmp();
    c.ok("system_wakeup", json!({}));
    assert_eq!(status(&mut c), "running");
    assert!(c.events.is_empty());
}

#[test]
fn quit_emits_shutdown_and_exits_zero() {
    let mut vmm = VmmProcess::start(&["-no-shutdown"]);
    let mut c = vmm.qmp();
    assert_eq!(c.ok("quit", json!({})), json!({}));
    let e = c.wait_event("SHUTDOWN");
    assert_eq!(e["data"], json!({"guest": false}));
    assert!(
        c.read_message().is_none(),
        "connection stays open after quit"
    );
    let st = vmm.wait_exit();
    assert_eq!(st.code(), Some(0));
    assert!(!vmm.qmp_path.exists(), "socket left behind");
}

#[test]
fn no_reboot_turns_system_reset_into_shutdown() {
    let mut vmm = VmmProcess::start(&["-no-reboot"]);
    let mut c = vmm.qmp();
    c.ok("system_reset", json!({}));
    assert_eq!(c.wait_event("SHUTDOWN")["data"], json!({"guest": false}));
    assert_eq!(vmm.wait_exit().code(), Some(0));
}

#[test]
fn no_shutdown_keeps_the_process_in_state_shutdown_until_reset() {
    let vmm = VmmProcess::start(&["-no-reboot", "-no-shutdown"]);
    let mut c = vmm.qmp();
    c.ok("system_reset", json!({}));
    c.wait_event("SHUTDOWN");
    c.wait_event("STOP");
    assert_eq!(status(&mut c), "shutdown");
    assert_eq!(
        c.err("cont", json!({})),
        (
            "GenericError".into(),
            "Resetting the Virtual Machine is required".into()
        )
    );
    // With -no-reboot a reset request shuts down again; without it the
    // reset brings the machine back to prelaunch. Here: still shutdown.
    c.ok("system_reset", json!({}));
    c.wait_event("SHUTDOWN");
    assert_eq!(status(&mut c), "shutdown");
}

#[test]
fn sigterm_emits_shutdown_and_exits_zero() {
    let mut vmm = VmmProcess::start(&["-no-shutdown"]);
    let mut c = vmm.qmp();
    vmm_tests::send_signal(vmm.child.id(), libc::SIGTERM);
    assert_eq!(c.wait_event("SHUTDOWN")["data"], json!({"guest": false}));
    assert_eq!(vmm.wait_exit().code(), Some(0));
    assert!(vmm.stderr().contains("terminating on signal 15"));
}

#[test]
fn every_negotiated_monitor_gets_every_event() {
    let dir = vmm_tests::TempDir::new("mon");
    let p2 = dir.path().join("b.sock");
    let a2 = format!("unix:{},server,nowait", p2.display());
    let vmm = VmmProcess::start(&["-S", "-qmp", &a2]);
    vmm.wait_for_path(&p2);
    let mut a = vmm.qmp();
    let mut b = vmm_tests::QmpClient::connect(&p2);
    b.negotiate();
    a.ok("cont", json!({}));
    a.wait_event("RESUME");
    b.wait_event("RESUME");
    b.ok("stop", json!({}));
    b.wait_event("STOP");
    a.wait_event("STOP");
}
