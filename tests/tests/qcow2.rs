//! qcow2 through the `vmm` binary: the guest's virtio-blk on a qcow2
//! image, internal snapshots over QMP, BLOCK_IMAGE_CORRUPTED, SIGKILL in
//! the middle of a write storm, and `-drive snapshot=on`; qemu-img and
//! qemu-io check every image afterwards.

use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use vmm_tests::{guest_args, wait_for_text, QmpClient, TempDir, VmmProcess};

fn tool(cmd: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (scripts/setup.sh installs qemu-utils)"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn qemu_img(args: &[&str]) -> String {
    let (code, text) = tool("qemu-img", args);
    assert_eq!(code, 0, "qemu-img {args:?}: {text}");
    text
}

fn quit(mut vmm: VmmProcess, c: &mut QmpClient) {
    c.ok("quit", json!({}));
    let status = vmm.wait_exit();
    assert!(status.success(), "{status:?}");
}

fn check_clean(img: &Path) {
    let (code, text) = tool("qemu-img", &["check", img.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("No errors were found on the image."),
        "{text}"
    );
}

#[test]
fn the_guest_reads_and_writes_a_qcow2_image() {
    let dir = TempDir::new("q2guest");
    let raw = dir.path().join("disk.raw");
    let mut data = vec![0u8; 1 << 20];
    data[..16].copy_from_slice(b"vmm-test-disk!!!");
    std::fs::write(&raw, &data).unwrap();
    let img = dir.path().join("disk.qcow2");
    qemu_img(&[
        "convert",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4k",
        raw.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    let serial = dir.path().join("com1.log");
    let drive = format!("file={},if=none,id=d0,format=qcow2", img.display());
    let args = guest_args(
        "virtio-blk,idle",
        &serial,
        &[
            "-drive",
            &drive,
            "-device",
            "virtio-blk-pci,drive=d0,serial=vmm-disk-1",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    let mut c = vmm.qmp();
    let out = wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains("ok virtio-blk") || l.contains("fail")
    });
    assert!(
        out.contains("capacity=2048 sector0=766d6d2d746573742d6469736b212121"),
        "{out}"
    );
    let blk = c.ok("query-block", json!({}));
    let inserted = &blk[0]["inserted"];
    assert_eq!(inserted["drv"], "qcow2");
    assert_eq!(inserted["image"]["format"], "qcow2");
    assert_eq!(inserted["image"]["cluster-size"], 4096);
    assert_eq!(inserted["image"]["dirty-flag"], false);
    assert_eq!(
        inserted["image"]["format-specific"],
        json!({"type": "qcow2", "data": {"compat": "1.1", "lazy-refcounts": false,
            "refcount-bits": 16, "corrupt": false}})
    );
    quit(vmm, &mut c);
    check_clean(&img);
    let back = dir.path().join("back.raw");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        img.to_str().unwrap(),
        back.to_str().unwrap(),
    ]);
    let data = std::fs::read(&back).unwrap();
    for i in 0..4096 {
        assert_eq!(
            data[8 * 512 + i],
            (i as u8).wrapping_mul(7).wrapping_add(3),
            "byte {i}"
        );
    }
}

#[test]
fn internal_snapshots_over_qmp() {
    let dir = TempDir::new("q2snap");
    let img = dir.path().join("s.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "4M"]);
    let drive = format!("file={},if=none,id=d0,format=qcow2", img.display());
    let ro = format!(
        "file={},if=none,id=d1,format=raw,readonly=on",
        img.display()
    );
    let mut vmm = VmmProcess::start(&["-S", "-nodefaults", "-drive", &drive, "-drive", &ro]);
    let mut c = vmm.qmp();
    c.hmp("qemu-io d0 \"write -P 0x41 0 64k\"");
    c.ok(
        "blockdev-snapshot-internal-sync",
        json!({"device": "d0", "name": "one"}),
    );
    c.hmp("qemu-io d0 \"write -P 0x42 0 4k\"");
    let err = |c: &mut QmpClient, cmd: &str, args: serde_json::Value| c.err(cmd, args).1;
    assert_eq!(
        err(
            &mut c,
            "blockdev-snapshot-internal-sync",
            json!({"device": "d0", "name": "one"})
        ),
        "Snapshot with name 'one' already exists on device 'd0'"
    );
    assert_eq!(
        err(
            &mut c,
            "blockdev-snapshot-internal-sync",
            json!({"device": "d0", "name": ""})
        ),
        "Name is empty"
    );
    assert_eq!(
        err(
            &mut c,
            "blockdev-snapshot-internal-sync",
            json!({"device": "d1", "name": "x"})
        ),
        "Device 'd1' is read only"
    );
    assert_eq!(
        err(
            &mut c,
            "blockdev-snapshot-internal-sync",
            json!({"device": "nope", "name": "x"})
        ),
        "Cannot find device=nope nor node_name=nope"
    );
    assert_eq!(
        err(
            &mut c,
            "blockdev-snapshot-delete-internal-sync",
            json!({"device": "d0"})
        ),
        "Name or id must be provided"
    );
    c.ok(
        "blockdev-snapshot-internal-sync",
        json!({"device": "d0", "name": "two"}),
    );
    let blk = c.ok("query-block", json!({}));
    let snaps = &blk[0]["inserted"]["image"]["snapshots"];
    assert_eq!(snaps[0]["name"], "one");
    assert_eq!(snaps[0]["id"], "1");
    assert_eq!(snaps[1]["name"], "two");
    assert_eq!(snaps[1]["vm-state-size"], 0);
    let gone = c.ok(
        "blockdev-snapshot-delete-internal-sync",
        json!({"device": "d0", "name": "one"}),
    );
    assert_eq!(gone["id"], "1");
    assert_eq!(gone["name"], "one");
    assert_eq!(
        err(
            &mut c,
            "blockdev-snapshot-delete-internal-sync",
            json!({"device": "d0", "id": "1"})
        ),
        "Snapshot with id '1' and name '(null)' does not exist on device 'd0'"
    );
    c.ok("quit", json!({}));
    assert!(vmm.wait_exit().success());
    check_clean(&img);
    let list = qemu_img(&["snapshot", "-l", img.to_str().unwrap()]);
    assert!(list.contains("two") && !list.contains("one"), "{list}");
    let raw = dir.path().join("two.raw");
    qemu_img(&[
        "convert",
        "-l",
        "snapshot.name=two",
        "-O",
        "raw",
        img.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    let two = std::fs::read(&raw).unwrap();
    assert!(two[..4096].iter().all(|b| *b == 0x42));
    assert!(two[4096..65536].iter().all(|b| *b == 0x41));
}

#[test]
fn a_write_on_metadata_marks_the_image_corrupt() {
    let dir = TempDir::new("q2corrupt");
    let img = dir.path().join("c.qcow2");
    let p = img.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", p, "1M"]);
    let (code, t) = tool("qemu-io", &["-c", "write -P 1 0 64k", p]);
    assert_eq!(code, 0, "{t}");
    // QEMU's layout: header, refcount table, refcount block, L1 at
    // 0x30000, the L2 table at 0x40000. Point guest cluster 0 at the L1
    // table.
    let mut b = std::fs::read(&img).unwrap();
    assert_eq!(&b[0x30000..0x30008], &(0x40000u64 | 1 << 63).to_be_bytes());
    b[0x40000..0x40008].copy_from_slice(&(0x30000u64 | 1 << 63).to_be_bytes());
    std::fs::write(&img, &b).unwrap();
    let drive = format!("file={p},if=none,id=d0,format=qcow2");
    let mut vmm = VmmProcess::start(&["-S", "-nodefaults", "-drive", &drive]);
    let mut c = vmm.qmp();
    let out = c.hmp("qemu-io d0 \"write -P 2 512 512\"");
    assert!(out.contains("write failed: Input/output error"), "{out}");
    let ev = c.wait_event("BLOCK_IMAGE_CORRUPTED");
    assert_eq!(
        ev["data"],
        json!({"device": "d0", "node-name": ev["data"]["node-name"], "msg":
            "Preventing invalid write on metadata (overlaps with active L1 table)",
            "offset": 0x30000 + 512, "size": 512, "fatal": true})
    );
    // Nothing more is written.
    let out = c.hmp("qemu-io d0 \"write -P 3 131072 512\"");
    assert!(out.contains("write failed"), "{out}");
    c.ok("quit", json!({}));
    assert!(vmm.wait_exit().success());
    let info = qemu_img(&["info", "--output=json", p]);
    assert!(info.contains("\"corrupt\": true"), "{info}");
    let b = std::fs::read(&img).unwrap();
    assert_eq!(&b[0x30000..0x30008], &(0x40000u64 | 1 << 63).to_be_bytes());
}

#[test]
fn sigkill_in_a_write_storm_leaves_no_corruption() {
    let dir = TempDir::new("q2kill");
    let img = dir.path().join("k.qcow2");
    let p = img.to_str().unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4k",
        p,
        "64M",
    ]);
    let drive = format!("file={p},if=none,id=d0,format=qcow2");
    let vmm = VmmProcess::start(&["-S", "-nodefaults", "-drive", &drive]);
    let mut c = vmm.qmp();
    // Acknowledged and flushed.
    for i in 0..16u64 {
        c.hmp(&format!(
            "qemu-io d0 \"write -P {} {} 12k\"",
            i + 1,
            i * 1_048_576 + 512
        ));
    }
    c.hmp("qemu-io d0 \"flush\"");
    // A storm of writes nobody waits for, then SIGKILL.
    let mut storm = String::new();
    for i in 0..400u64 {
        let off = (i * 7919 % 15_000) * 4096 + 20 * 1_048_576;
        storm.push_str(
            &json!({"execute": "human-monitor-command",
                "arguments": {"command-line": format!("qemu-io d0 \"write -P 0x77 {off} 6k\"")}})
            .to_string(),
        );
    }
    c.send_raw(storm.as_bytes());
    std::thread::sleep(Duration::from_millis(150));
    let pid = vmm.child.id();
    vmm_tests::send_signal(pid, libc::SIGKILL);
    drop(vmm);
    // Leaks are allowed (exit 3), corruption is not.
    let (code, text) = tool("qemu-img", &["check", p]);
    assert!(code == 0 || code == 3, "{text}");
    assert!(!text.contains("ERROR"), "{text}");
    for i in 0..16u64 {
        let (code, t) = tool(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                &format!("read -P {} {} 12k", i + 1, i * 1_048_576 + 512),
                p,
            ],
        );
        assert_eq!(code, 0, "{t}");
        assert!(!t.contains("Pattern verification failed"), "{t}");
    }
}

#[test]
fn snapshot_on_leaves_the_image_alone() {
    let dir = TempDir::new("q2tmp");
    let img = dir.path().join("base.raw");
    std::fs::write(&img, vec![0x5au8; 1 << 20]).unwrap();
    let drive = format!(
        "file={},if=none,id=d0,format=raw,snapshot=on",
        img.display()
    );
    let mut vmm = VmmProcess::start(&["-S", "-nodefaults", "-drive", &drive]);
    let mut c = vmm.qmp();
    c.hmp("qemu-io d0 \"write -P 0x11 0 8k\"");
    let out = c.hmp("qemu-io d0 \"read -P 0x11 0 8k\"");
    assert!(!out.contains("verification failed"), "{out}");
    let out = c.hmp("qemu-io d0 \"read -P 0x5a 8k 8k\"");
    assert!(!out.contains("verification failed"), "{out}");
    let blk = c.ok("query-block", json!({}));
    let inserted = &blk[0]["inserted"];
    assert_eq!(inserted["drv"], "qcow2");
    assert_eq!(inserted["backing_file_depth"], 1);
    assert_eq!(
        inserted["image"]["backing-image"]["filename"],
        img.to_str().unwrap()
    );
    c.ok("quit", json!({}));
    assert!(vmm.wait_exit().success());
    assert!(std::fs::read(&img).unwrap().iter().all(|b| *b == 0x5a));
}

#[test]
fn transactions_of_internal_snapshots_are_all_or_nothing() {
    let dir = TempDir::new("q2trans");
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    for p in [&a, &b] {
        qemu_img(&["create", "-q", "-f", "qcow2", p.to_str().unwrap(), "1M"]);
    }
    let da = format!("file={},if=none,id=da,format=qcow2", a.display());
    let db = format!("file={},if=none,id=db,format=qcow2", b.display());
    let mut vmm = VmmProcess::start(&["-S", "-nodefaults", "-drive", &da, "-drive", &db]);
    let mut c = vmm.qmp();
    let snap = |dev: &str, name: &str| {
        json!({"type": "blockdev-snapshot-internal-sync",
            "data": {"device": dev, "name": name}})
    };
    c.ok(
        "transaction",
        json!({"actions": [snap("da", "s1"), snap("db", "s1")]}),
    );
    // An abort undoes the snapshots made before it.
    let (class, desc) = c.err(
        "transaction",
        json!({"actions": [snap("da", "s2"), snap("db", "s2"), {"type": "abort", "data": {}}]}),
    );
    assert_eq!(class, "GenericError");
    assert_eq!(desc, "Transaction aborted using Abort action");
    // So does a failing action (the name exists on db).
    let (_, desc) = c.err(
        "transaction",
        json!({"actions": [snap("da", "s3"), snap("db", "s1")]}),
    );
    assert_eq!(
        desc,
        "Snapshot with name 's1' already exists on device 'db'"
    );
    assert_eq!(c.snapshot_names(0), ["s1"]);
    assert_eq!(c.snapshot_names(1), ["s1"]);
    c.ok("quit", json!({}));
    assert!(vmm.wait_exit().success());
    check_clean(&a);
    check_clean(&b);
}
