//! The error policies of block backends (`werror`/`rerror`: report,
//! ignore, stop, enospc) end to end: BLOCK_IO_ERROR, the `io-error` run
//! state, query-block's `io-status`, and `cont` retrying the requests
//! that stopped the VM.
//!
//! The errors are real errno values coming up through the block layer
//! from QEMU's `blkdebug` driver (between the raw format and the image
//! file), as QEMU's own tests make them: an `inject-error` rule fails the
//! requests that follow its event with the errno it names, `once` makes
//! the failure go away after the first request. A failed write leaves
//! the image untouched, so what the host file holds afterwards shows
//! whether the retried request really ran.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vmm_tests::{guest_args, wait_for_text, QmpClient, TempDir, VmmProcess};

const LIMIT: Duration = Duration::from_secs(60);

fn make_image(dir: &Path) -> PathBuf {
    let img = dir.join("disk.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).expect("image");
    img
}

/// A blkdebug configuration file with one `inject-error` rule.
fn rule(dir: &Path, event: &str, errno: i32, once: bool) -> PathBuf {
    let conf = dir.join("blkdebug.conf");
    let once = if once { "on" } else { "off" };
    std::fs::write(
        &conf,
        format!(
            "# injected by the test\n[inject-error]\nevent = \"{event}\"\nerrno = \"{errno}\"\nonce = \"{once}\"\n"
        ),
    )
    .expect("blkdebug config");
    conf
}

/// A running guest (`virtio-blk-rw`) on a disk whose errors come from
/// blkdebug.
struct Run {
    img: PathBuf,
    serial: PathBuf,
    c: QmpClient,
    _vmm: VmmProcess,
    _dir: TempDir,
}

/// Boots the guest's `virtio-blk-rw` test with the `disk` arguments
/// made for (directory, image). It starts paused (`-S`) and runs once
/// QMP is ready, so that no event is emitted before the client sees it.
fn boot(tag: &str, disk: impl FnOnce(&Path, &Path) -> Vec<String>) -> Run {
    let dir = TempDir::new(tag);
    let img = make_image(dir.path());
    let serial = dir.path().join("com1.log");
    let disk = disk(dir.path(), &img);
    let disk: Vec<&str> = disk.iter().map(String::as_str).collect();
    let mut args = guest_args("virtio-blk-rw,idle", &serial, &disk);
    args.push("-S".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    let mut c = vmm.qmp();
    c.ok("cont", json!({}));
    c.wait_event("RESUME");
    Run {
        img,
        serial,
        c,
        _vmm: vmm,
        _dir: dir,
    }
}

/// `-drive file=blkdebug:CONF:IMG,...,id=drive0` with one rule and
/// `policy` (`werror=stop`...), and its virtio-blk-pci `vblk0`.
fn with_drive(tag: &str, event: &str, errno: i32, once: bool, policy: &str) -> Run {
    boot(tag, |dir, img| {
        let conf = rule(dir, event, errno, once);
        blkdebug_drive(&conf, img, policy)
    })
}

/// `-drive file=blkdebug:CONF:IMG,...,id=drive0,POLICY` and its
/// virtio-blk-pci `vblk0`.
fn blkdebug_drive(conf: &Path, img: &Path, policy: &str) -> Vec<String> {
    vec![
        "-drive".into(),
        format!(
            "file=blkdebug:{}:{},format=raw,if=none,id=drive0,{policy}",
            conf.display(),
            img.display()
        ),
        "-device".into(),
        "virtio-blk-pci,drive=drive0,id=vblk0".into(),
    ]
}

/// `-blockdev`: raw node `disk` over blkdebug with `inject` rules, and a
/// virtio-blk-pci `vblk0` with `props` on it.
fn with_node(tag: &str, inject: Value, props: &str) -> Run {
    boot(tag, |_, img| {
        let blockdev = json!({
            "driver": "raw", "node-name": "disk",
            "file": {"driver": "blkdebug",
                     "image": {"driver": "file", "filename": img},
                     "inject-error": inject}});
        vec![
            "-blockdev".into(),
            blockdev.to_string(),
            "-device".into(),
            format!("virtio-blk-pci,drive=disk,id=vblk0,{props}"),
        ]
    })
}

/// Waits for the guest to finish and checks its lines.
fn guest_says(serial: &Path, lines: &[&str]) {
    let out = wait_for_text(serial, LIMIT, |l| {
        l.contains("ok virtio-blk-rw") || l.contains("fail")
    });
    for l in lines {
        assert!(out.contains(&format!("virtio-blk-rw {l}")), "{l}: {out}");
    }
}

fn status(c: &mut QmpClient) -> Value {
    c.ok("query-status", json!({}))
}

/// query-block's entry for the backend `device` of device `vblk0`.
fn block_info(c: &mut QmpClient, device: &str) -> Value {
    let all = c.ok("query-block", json!({}));
    all.as_array()
        .and_then(|a| {
            a.iter().find(|b| {
                b["device"] == device && b["qdev"].as_str().is_some_and(|q| q.contains("vblk0"))
            })
        })
        .cloned()
        .unwrap_or_else(|| panic!("no {device} in {all}"))
}

fn stats(c: &mut QmpClient, device: &str) -> Value {
    let all = c.ok("query-blockstats", json!({}));
    all.as_array()
        .and_then(|a| a.iter().find(|b| b["device"] == device))
        .map(|b| b["stats"].clone())
        .unwrap_or_else(|| panic!("no {device} in {all}"))
}

fn pattern_written(img: &Path) -> bool {
    let data = std::fs::read(img).expect("image");
    (0..4096).all(|i| data[4096 + i] == (i as u8).wrapping_mul(7).wrapping_add(3))
}

/// Reads messages until `name`, returning every event seen on the way
/// (the one named last).
fn events_until(c: &mut QmpClient, name: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let m = c
            .read_message()
            .unwrap_or_else(|| panic!("closed while waiting for {name}"));
        assert!(m.get("event").is_some(), "unexpected message {m}");
        let done = m["event"] == name;
        seen.push(m);
        if done {
            return seen;
        }
    }
}

fn names(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or(""))
        .collect()
}

#[test]
fn werror_stop_stops_the_vm_and_cont_retries_the_write() {
    let mut r = with_drive(
        "blkerr-stop",
        "write_aio",
        libc::EIO,
        true,
        "werror=stop,rerror=stop",
    );
    let events = events_until(&mut r.c, "STOP");
    assert_eq!(names(&events), ["BLOCK_IO_ERROR", "STOP"], "{events:?}");
    let info = block_info(&mut r.c, "drive0");
    assert_eq!(
        events[0]["data"],
        json!({"device": "drive0", "node-name": info["inserted"]["node-name"],
               "operation": "write", "action": "stop", "nospace": false,
               "reason": "Input/output error"})
    );
    assert_eq!(
        status(&mut r.c),
        json!({"running": false, "singlestep": false, "status": "io-error"})
    );
    assert_eq!(info["io-status"], "failed", "{info}");
    let file = info["inserted"]["file"].as_str().unwrap_or_default();
    assert!(file.starts_with("blkdebug:"), "{info}");
    // The guest still waits for its write; nothing reached the image,
    // and the stopped request is not counted yet.
    let text = std::fs::read_to_string(&r.serial).unwrap_or_default();
    assert!(!text.contains("write status"), "{text}");
    assert!(!pattern_written(&r.img));
    assert_eq!(stats(&mut r.c, "drive0")["failed_wr_operations"], 0);

    r.c.ok("cont", json!({}));
    // The retry succeeds (the rule fired once): the guest sees success.
    guest_says(
        &r.serial,
        &[
            "write status=0",
            "read status=0 data=match",
            "flush status=0",
        ],
    );
    assert!(pattern_written(&r.img));
    assert_eq!(
        status(&mut r.c),
        json!({"running": true, "singlestep": false, "status": "running"})
    );
    // `cont` reset the drive's status.
    assert_eq!(block_info(&mut r.c, "drive0")["io-status"], "ok");
    let s = stats(&mut r.c, "drive0");
    assert_eq!(s["failed_wr_operations"], 0, "{s}");
    assert!(s["wr_operations"].as_i64().is_some_and(|n| n >= 1), "{s}");
    assert!(r.c.event_names().iter().all(|n| n != "BLOCK_IO_ERROR"));
}

#[test]
fn werror_report_fails_the_request_and_the_vm_runs() {
    // The device's own werror=report on the backend it makes for the
    // node. The rule covers sector 8 and stays: the write and the read
    // of sectors 8-15 fail, the flush covers no sector and passes.
    let mut r = with_node(
        "blkerr-report",
        json!([{"event": "write_aio", "sector": 8}]),
        "werror=report",
    );
    guest_says(
        &r.serial,
        &[
            "write status=1",
            "read status=1 data=differ",
            "flush status=0",
        ],
    );
    assert!(!pattern_written(&r.img));
    let write = r.c.wait_event("BLOCK_IO_ERROR");
    // No backend name, and no `nospace`: nothing can stop the VM, so
    // there is no I/O status.
    assert_eq!(
        write["data"],
        json!({"device": "", "node-name": "disk", "operation": "write",
               "action": "report", "reason": "Input/output error"})
    );
    let read = r.c.wait_event("BLOCK_IO_ERROR");
    assert_eq!(read["data"]["operation"], "read");
    assert_eq!(read["data"]["action"], "report");
    assert_eq!(status(&mut r.c)["status"], "running");
    let info = block_info(&mut r.c, "");
    assert!(info.get("io-status").is_none(), "{info}");
    assert!(!r.c.event_names().iter().any(|n| n == "STOP"));
    let s = stats(&mut r.c, "");
    assert_eq!(s["failed_wr_operations"], 1, "{s}");
    assert_eq!(s["failed_rd_operations"], 1, "{s}");
}

#[test]
fn rerror_ignore_completes_failed_reads() {
    // The rule arms only once the guest has written (blkdebug state 2):
    // vmm reads the disk's first sector when it creates the device, for
    // QEMU's geometry guess, and an armed read rule would fail the
    // guest's write too.
    let mut r = boot("blkerr-ignore", |dir, img| {
        let conf = dir.join("blkdebug.conf");
        std::fs::write(
            &conf,
            "[set-state]\nevent = \"write_aio\"\nstate = \"1\"\nnew_state = \"2\"\n\
             [inject-error]\nevent = \"read_aio\"\nstate = \"2\"\nerrno = \"5\"\n",
        )
        .expect("blkdebug config");
        blkdebug_drive(&conf, img, "rerror=ignore")
    });
    // The write passed; the read failed and the guest was told it
    // worked (its buffer never got the data).
    guest_says(&r.serial, &["write status=0", "read status=0 data=differ"]);
    assert!(pattern_written(&r.img));
    let ev = r.c.wait_event("BLOCK_IO_ERROR");
    assert_eq!(ev["data"]["operation"], "read");
    assert_eq!(ev["data"]["action"], "ignore");
    // werror=enospc (the default) makes the status reported.
    assert_eq!(ev["data"]["nospace"], false);
    assert_eq!(status(&mut r.c)["status"], "running");
    assert_eq!(block_info(&mut r.c, "drive0")["io-status"], "ok");
    let s = stats(&mut r.c, "drive0");
    assert_eq!(s["failed_rd_operations"], 0, "{s}");
}

#[test]
fn enospc_stops_on_enospc_and_reports_other_errors() {
    // ENOSPC with werror=enospc: the VM stops.
    let mut r = with_drive(
        "blkerr-nospc",
        "write_aio",
        libc::ENOSPC,
        true,
        "werror=enospc",
    );
    let events = events_until(&mut r.c, "STOP");
    assert_eq!(names(&events), ["BLOCK_IO_ERROR", "STOP"], "{events:?}");
    assert_eq!(events[0]["data"]["action"], "stop");
    assert_eq!(events[0]["data"]["nospace"], true);
    assert_eq!(events[0]["data"]["reason"], "No space left on device");
    assert_eq!(status(&mut r.c)["status"], "io-error");
    assert_eq!(block_info(&mut r.c, "drive0")["io-status"], "nospace");
    // Space came back: cont retries the write.
    r.c.ok("cont", json!({}));
    guest_says(&r.serial, &["write status=0"]);
    assert!(pattern_written(&r.img));
    assert_eq!(block_info(&mut r.c, "drive0")["io-status"], "ok");

    // EIO with werror=enospc: reported to the guest, the VM runs on.
    let mut r = with_drive("blkerr-eio", "write_aio", libc::EIO, true, "werror=enospc");
    guest_says(&r.serial, &["write status=1", "read status=0 data=differ"]);
    let ev = r.c.wait_event("BLOCK_IO_ERROR");
    assert_eq!(ev["data"]["action"], "report");
    assert_eq!(ev["data"]["nospace"], false);
    assert_eq!(status(&mut r.c)["status"], "running");
    assert_eq!(block_info(&mut r.c, "drive0")["io-status"], "ok");
}

#[test]
fn device_werror_stop_on_a_node_and_cont() {
    let mut r = with_node(
        "blkerr-dev",
        json!([{"event": "write_aio", "errno": 5, "once": true}]),
        "werror=stop",
    );
    let events = events_until(&mut r.c, "STOP");
    assert_eq!(
        events[0]["data"],
        json!({"device": "", "node-name": "disk", "operation": "write",
               "action": "stop", "nospace": false, "reason": "Input/output error"})
    );
    assert_eq!(status(&mut r.c)["status"], "io-error");
    assert_eq!(block_info(&mut r.c, "")["io-status"], "failed");
    r.c.ok("cont", json!({}));
    r.c.wait_event("RESUME");
    guest_says(&r.serial, &["write status=0", "read status=0 data=match"]);
    assert!(pattern_written(&r.img));
    // QEMU 2.11's `cont` resets the status of the monitor's backends
    // only: the one the device made for the node keeps "failed".
    assert_eq!(block_info(&mut r.c, "")["io-status"], "failed");
}

#[test]
fn a_bad_device_policy_is_refused() {
    let dir = TempDir::new("blkerr-bad");
    let img = make_image(dir.path());
    let drive = format!("file={},format=raw,if=none,id=drive0", img.display());
    let (st, _, err) = vmm_tests::run_vmm(&[
        "-nodefaults",
        "-drive",
        &drive,
        "-device",
        "virtio-blk-pci,drive=drive0,werror=bogus",
    ]);
    assert!(!st.success());
    assert!(
        err.contains("-device virtio-blk-pci,drive=drive0,werror=bogus: Invalid parameter 'bogus'"),
        "{err}"
    );
    let (st, _, err) =
        vmm_tests::run_vmm(&["-nodefaults", "-drive", &format!("{drive},rerror=enospc")]);
    assert!(!st.success());
    assert!(err.contains("'enospc' invalid read error action"), "{err}");
}
