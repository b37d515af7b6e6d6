//! The block layer over QMP and the command line: blockdev-add/del,
//! the query answers, block_resize checked with qemu-img, QEMU's image
//! locks between processes, O_DIRECT, -drive and -blockdev.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use vmm_tests::{start_fails, TempDir, VmmProcess};

fn image(dir: &Path, name: &str, size: &str) -> PathBuf {
    let p = dir.join(name);
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&p)
        .arg(size)
        .output()
        .expect("qemu-img (qemu-utils) is installed");
    assert!(out.status.success(), "{out:?}");
    p
}

fn qemu_img_info(path: &Path, force_share: bool) -> Result<Value, String> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["info", "--output=json"]);
    if force_share {
        cmd.arg("-U");
    }
    let out = cmd.arg(path).output().expect("qemu-img");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn names(nodes: &Value) -> Vec<String> {
    nodes
        .as_array()
        .expect("list")
        .iter()
        .map(|n| n["node-name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn blockdev_add_and_del() {
    let dir = TempDir::new("block-add");
    let img = image(dir.path(), "disk.img", "1M");
    let vmm = VmmProcess::start(&["-S", "-machine", "none"]);
    let mut c = vmm.qmp();
    assert_eq!(c.ok("query-named-block-nodes", json!({})), json!([]));

    c.ok(
        "blockdev-add",
        json!({"driver": "raw", "node-name": "disk",
               "file": {"driver": "file", "filename": img}}),
    );
    c.ok(
        "blockdev-add",
        json!({"driver": "null-co", "node-name": "nul", "size": 4096}),
    );
    let nodes = c.ok("query-named-block-nodes", json!({}));
    let n = names(&nodes);
    assert_eq!(n.len(), 3, "{nodes}");
    assert!(n[0].starts_with("#block"), "{n:?}");
    assert_eq!(&n[1..], ["disk", "nul"]);
    let disk = &nodes[1];
    assert_eq!(disk["drv"], "raw");
    assert_eq!(disk["file"], json!(img));
    assert_eq!(disk["ro"], false);
    assert_eq!(disk["encrypted"], false);
    assert_eq!(disk["bps"], 0);
    assert_eq!(disk["detect_zeroes"], "off");
    assert_eq!(disk["image"]["virtual-size"], 1 << 20);
    assert_eq!(disk["image"]["format"], "raw");
    assert_eq!(disk["image"]["filename"], json!(img));
    assert!(disk["image"]["actual-size"].is_number());
    assert_eq!(nodes[0]["drv"], "file");
    assert_eq!(nodes[2]["file"], "null-co://");
    assert_eq!(nodes[2]["image"]["virtual-size"], 4096);

    let err = |c: &mut vmm_tests::QmpClient, cmd: &str, args: Value| c.err(cmd, args).1;
    assert_eq!(
        err(
            &mut c,
            "blockdev-add",
            json!({"driver": "raw", "node-name": "x",
            "file": {"driver": "file", "filename": "/nonexistent/disk.img"}})
        ),
        "Could not open '/nonexistent/disk.img': No such file or directory"
    );
    assert_eq!(
        err(
            &mut c,
            "blockdev-add",
            json!({"driver": "vmdk", "node-name": "x", "file": "disk"})
        ),
        "Unknown driver: 'vmdk'"
    );
    assert_eq!(
        err(
            &mut c,
            "blockdev-add",
            json!({"driver": "bogus", "node-name": "x"})
        ),
        "Invalid parameter 'bogus'"
    );
    assert_eq!(
        err(
            &mut c,
            "blockdev-add",
            json!({"driver": "null-co", "node-name": "nul"})
        ),
        "Duplicate node name"
    );
    assert_eq!(
        err(&mut c, "blockdev-add", json!({"driver": "null-co"})),
        "'node-name' must be specified for the root node"
    );
    // A node used by another: a raw node over 'nul'.
    c.ok(
        "blockdev-add",
        json!({"driver": "raw", "node-name": "top", "file": "nul"}),
    );
    assert_eq!(
        err(&mut c, "blockdev-del", json!({"node-name": "nul"})),
        "Block device nul is in use"
    );
    assert_eq!(
        err(&mut c, "blockdev-del", json!({"node-name": n[0]})),
        format!("Node {} is not owned by the monitor", n[0])
    );
    assert_eq!(
        err(&mut c, "blockdev-del", json!({"node-name": "nope"})),
        "Cannot find node nope"
    );
    c.ok("blockdev-del", json!({"node-name": "top"}));
    c.ok("blockdev-del", json!({"node-name": "nul"}));
    c.ok("blockdev-del", json!({"node-name": "disk"}));
    assert_eq!(c.ok("query-named-block-nodes", json!({})), json!([]));
}

#[test]
fn drives_query_block_and_resize() {
    let dir = TempDir::new("block-drive");
    let img = image(dir.path(), "disk.img", "1M");
    let drive = format!("file={},format=raw,if=none,id=d0", img.display());
    let vmm = VmmProcess::start(&[
        "-S",
        "-drive",
        &drive,
        "-device",
        "virtio-blk-pci,drive=d0,id=vd0",
        "-blockdev",
        "driver=null-co,node-name=nul,size=1048576",
    ]);
    let mut c = vmm.qmp();
    let blocks = c.ok("query-block", json!({}));
    assert_eq!(blocks.as_array().map(Vec::len), Some(1), "{blocks}");
    let b = &blocks[0];
    assert_eq!(b["device"], "d0");
    assert_eq!(b["qdev"], "/machine/peripheral/vd0/virtio-backend");
    assert_eq!(b["type"], "unknown");
    assert_eq!(b["removable"], false);
    assert_eq!(b["locked"], false);
    assert_eq!(b["io-status"], "ok");
    assert_eq!(b["inserted"]["drv"], "raw");
    assert_eq!(b["inserted"]["image"]["virtual-size"], 1 << 20);
    assert_eq!(
        b["inserted"]["cache"],
        json!({"writeback": true, "direct": false, "no-flush": false})
    );
    let root = b["inserted"]["node-name"]
        .as_str()
        .expect("node-name")
        .to_string();

    let (_, e) = c.err("blockdev-del", json!({"node-name": root}));
    assert_eq!(e, format!("Node {root} is in use"));

    c.ok("block_resize", json!({"device": "d0", "size": 2 << 20}));
    let info = qemu_img_info(&img, true).expect("qemu-img info -U");
    assert_eq!(info["virtual-size"], 2 << 20);
    let blocks = c.ok("query-block", json!({}));
    assert_eq!(blocks[0]["inserted"]["image"]["virtual-size"], 2 << 20);
    c.ok("block_resize", json!({"node-name": root, "size": 3 << 20}));
    assert_eq!(
        qemu_img_info(&img, true).expect("info")["virtual-size"],
        3 << 20
    );

    let err = |c: &mut vmm_tests::QmpClient, args: Value| c.err("block_resize", args).1;
    assert_eq!(
        err(&mut c, json!({"device": "d0", "size": -1})),
        "Parameter 'size' expects a >0 size"
    );
    assert_eq!(
        err(&mut c, json!({"device": "nope", "size": 1})),
        "Cannot find device=nope nor node_name="
    );
    assert_eq!(
        err(&mut c, json!({"node-name": "nul", "size": 512})),
        "Image format driver does not support resize"
    );
    let nodes = c.ok("query-named-block-nodes", json!({}));
    // -blockdev comes before -drive, as in QEMU; then the drive's file
    // child before its format node.
    assert_eq!(names(&nodes)[0], "nul");
    assert_eq!(nodes[1]["drv"], "file");
    assert_eq!(nodes[2]["node-name"], json!(root));
    let child = names(&nodes)[1].clone();
    assert_eq!(
        err(&mut c, json!({"node-name": child, "size": 512})),
        "The feature 'resize' is not enabled"
    );

    let stats = c.ok("query-blockstats", json!({}));
    assert_eq!(stats[0]["device"], "d0");
    assert_eq!(stats[0]["node-name"], json!(root));
    assert_eq!(stats[0]["stats"]["rd_bytes"], 0);
    assert_eq!(stats[0]["stats"]["account_invalid"], true);
    assert_eq!(stats[0]["parent"]["node-name"], json!(child));
    let stats = c.ok("query-blockstats", json!({"query-nodes": true}));
    assert_eq!(stats.as_array().map(Vec::len), Some(3), "{stats}");
}

#[test]
fn image_locks_keep_a_second_writer_out() {
    let dir = TempDir::new("block-lock");
    let img = image(dir.path(), "disk.img", "1M");
    let drive = format!("file={},format=raw,if=none,id=d0", img.display());
    let args = ["-S", "-drive", &drive, "-device", "virtio-blk-pci,drive=d0"];
    let _first = VmmProcess::start(&args);
    // QEMU's own tools see vmm's locks.
    let out = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write 0 512"])
        .arg(&img)
        .output()
        .expect("qemu-io");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("Failed to get \"write\" lock"), "{e}");
    assert!(qemu_img_info(&img, false).is_ok(), "reading stays allowed");

    let stderr = start_fails(
        &args,
        &format!("-drive {drive}: Failed to get \"write\" lock"),
    );
    assert!(
        stderr.contains("Is another process using the image?"),
        "{stderr}"
    );

    // locking=off opts out, as with QEMU.
    let unlocked = format!("{drive},file.locking=off");
    let second = VmmProcess::start(&["-S", "-machine", "none", "-drive", &unlocked]);
    drop(second);
}

/// The open flags of the descriptor `pid` holds on `path`.
fn open_flags(pid: u32, path: &Path) -> Option<u32> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    for fd in fds.flatten() {
        if std::fs::read_link(fd.path()).ok().as_deref() == Some(path) {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
            return u32::from_str_radix(flags.trim(), 8).ok();
        }
    }
    None
}

#[test]
fn cache_direct_opens_with_o_direct() {
    let dir = TempDir::new("block-direct");
    let img = image(dir.path(), "disk.img", "1M");
    let img = img.canonicalize().expect("path");
    let spec = json!({"driver": "raw", "node-name": "disk", "cache": {"direct": true},
                      "file": {"driver": "file", "filename": img, "aio": "native"}});
    let vmm = VmmProcess::start(&["-S", "-machine", "none", "-blockdev", &spec.to_string()]);
    let mut c = vmm.qmp();
    let nodes = c.ok("query-named-block-nodes", json!({}));
    assert_eq!(nodes[1]["node-name"], "disk");
    assert_eq!(nodes[1]["cache"]["direct"], true);
    assert_eq!(
        nodes[0]["cache"]["direct"], true,
        "the file child inherits it"
    );
    let flags = open_flags(vmm.child.id(), &img).expect("vmm holds the image open");
    assert_ne!(flags & libc::O_DIRECT as u32, 0, "flags {flags:o}");
    let (_, e) = c.err(
        "blockdev-add",
        json!({"driver": "file", "node-name": "f", "filename": img, "aio": "native"}),
    );
    assert_eq!(
        e,
        "aio=native was specified, but it requires cache.direct=on, which was not specified."
    );
}

#[test]
fn command_line_errors() {
    let dir = TempDir::new("block-cmdline");
    let img = image(dir.path(), "disk.img", "1M");
    let run = |args: &[&str]| start_fails(args, "");
    let e = run(&[
        "-machine",
        "none",
        "-drive",
        "file=/nonexistent/x.img,format=raw,if=none",
    ]);
    assert!(
        e.contains("Could not open '/nonexistent/x.img': No such file or directory"),
        "{e}"
    );
    let drive = format!("file={},format=raw", img.display());
    let e = run(&["-machine", "none", "-drive", &drive]);
    assert!(e.contains("if=ide"), "{e}");
    let e = run(&[
        "-machine",
        "none",
        "-blockdev",
        "driver=vmdk,node-name=x,file=y",
    ]);
    assert!(e.contains("Unknown driver: 'vmdk'"), "{e}");
    let e = run(&["-machine", "none", "-blockdev", "driver=null-co"]);
    assert!(
        e.contains("'node-name' must be specified for the root node"),
        "{e}"
    );
    let e = run(&["-S", "-device", "virtio-blk-pci,drive=nothing"]);
    assert!(
        e.contains("Property 'virtio-blk-device.drive' can't find value 'nothing'"),
        "{e}"
    );
}
