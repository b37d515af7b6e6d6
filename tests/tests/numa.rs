//! `-numa` through the vmm binary: guest RAM made of the memory backends
//! that `memdev=` names (a file backend's pages are the guest's), the
//! nodes and CPUs as query-cpus, query-hotpluggable-cpus, qom-get and
//! `info numa` report them, object-del refusing a backend in use, and
//! QEMU's start-up errors; `-mem-path` and `-mem-prealloc`.

use serde_json::{json, Value};
use std::io::{Seek, SeekFrom, Write};
use vmm_tests::{guest_args, start_fails, TempDir, VmmProcess};

#[test]
fn guest_ram_is_made_of_the_node_backends() {
    let dir = TempDir::new("numa");
    let serial = dir.path().join("serial.log");
    let (n0, n1) = (dir.path().join("node0"), dir.path().join("node1"));
    let backend = |id: &str, path: &std::path::Path| {
        format!(
            "memory-backend-file,id={id},size=128M,mem-path={},share=on",
            path.display()
        )
    };
    let (b0, b1) = (backend("m0", &n0), backend("m1", &n1));
    let args = guest_args(
        "idle",
        &serial,
        &[
            "-smp",
            "2",
            "-object",
            &b0,
            "-object",
            &b1,
            "-numa",
            "node,memdev=m0,cpus=1",
            "-numa",
            "node,memdev=m1,cpus=0",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    let mut qmp = vmm.qmp();
    vmm_tests::wait_for_text(&serial, std::time::Duration::from_secs(30), |t| {
        t.contains("vmm-guest: idle")
    });

    // Bytes written into node 1's file show at the guest-physical
    // address right after node 0's 128 MiB, and node 0's file holds
    // what the guest sees at its start.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&n1)
        .expect("node 1 file");
    f.seek(SeekFrom::Start(0x2000)).expect("seek");
    f.write_all(b"NUMA-ONE").expect("write");
    f.flush().expect("flush");
    assert_eq!(
        qmp.hmp("xp /2x 0x8002000"),
        "0000000008002000: 0x414d554e 0x454e4f2d\r\n"
    );
    let dump = dir.path().join("low.bin");
    qmp.ok(
        "pmemsave",
        json!({"val": 0xe0000, "size": 0x20000, "filename": dump.to_str()}),
    );
    let node0 = std::fs::read(&n0).expect("node 0 file");
    let low = std::fs::read(&dump).expect("dump");
    assert_eq!(&node0[0xe0000..0x100000], &low[..]);
    // The guest's ACPI tables include the SRAT (and no SLIT without
    // -numa dist).
    assert!(low.windows(4).any(|w| w == b"SRAT"));
    assert!(!low.windows(4).any(|w| w == b"SLIT"));

    assert_eq!(
        qmp.hmp("info numa"),
        "2 nodes\r\nnode 0 cpus: 1\r\nnode 0 size: 128 MB\r\nnode 0 plugged: 0 MB\r\n\
         node 1 cpus: 0\r\nnode 1 size: 128 MB\r\nnode 1 plugged: 0 MB\r\n"
    );
    // pc.ram is a container of the two backends, named as QEMU names a
    // file backend's region (its path), and the flat view shows them.
    let mtree = qmp.hmp("info mtree");
    assert!(
        mtree.contains(
            "memory-region: pc.ram\r\n  0000000000000000-000000000fffffff (prio 0, i/o): pc.ram\r\n\
             \x20   0000000000000000-0000000007ffffff (prio 0, ram): /objects/m0\r\n\
             \x20   0000000008000000-000000000fffffff (prio 0, ram): /objects/m1\r\n"
        ),
        "{mtree}"
    );
    let flat = qmp.hmp("info mtree -f");
    assert!(
        flat.contains(
            "  0000000000000000-0000000007ffffff (prio 0, ram): /objects/m0\r\n\
             \x20 0000000008000000-000000000fffffff (prio 0, ram): /objects/m1\r\n"
        ),
        "{flat}"
    );
    let cpus = qmp.ok("query-cpus", json!({}));
    assert_eq!(
        cpus[0]["props"],
        json!({"node-id": 1, "socket-id": 0, "core-id": 0, "thread-id": 0})
    );
    assert_eq!(cpus[1]["props"]["node-id"], 0);
    let slots = qmp.ok("query-hotpluggable-cpus", json!({}));
    assert_eq!(slots[0]["props"]["node-id"], 0);
    assert_eq!(slots[1]["props"]["node-id"], 1);
    assert_eq!(
        qmp.ok(
            "qom-get",
            json!({"path": "/machine/unattached/device[0]", "property": "node-id"})
        ),
        json!(1)
    );

    // Guest RAM uses the backends: object-del refuses, as QEMU does.
    assert_eq!(
        qmp.err("object-del", json!({"id": "m0"})),
        (
            "GenericError".to_string(),
            "object 'm0' is in use, can not be deleted".to_string()
        )
    );
    // A backend nothing uses can go.
    qmp.ok(
        "object-add",
        json!({"qom-type": "memory-backend-ram", "id": "spare", "props": {"size": 1048576}}),
    );
    qmp.ok("object-del", json!({"id": "spare"}));
    let ids: Vec<Value> = qmp
        .ok("query-memdev", json!({}))
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, [json!("m0"), json!("m1")]);
    qmp.ok("quit", json!({}));
}

#[test]
fn nodes_without_memdev_share_ram_and_cpus_follow_sockets() {
    let dir = TempDir::new("numa-mem");
    let serial = dir.path().join("serial.log");
    let args = guest_args(
        "idle",
        &serial,
        &[
            "-smp",
            "4,sockets=2,cores=2",
            "-numa",
            "node",
            "-numa",
            "node",
            "-numa",
            "node",
            "-numa",
            "dist,src=0,dst=1,val=20",
            "-numa",
            "dist,src=0,dst=2,val=30",
            "-numa",
            "dist,src=1,dst=2,val=25",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    let mut qmp = vmm.qmp();
    vmm_tests::wait_for_text(&serial, std::time::Duration::from_secs(30), |t| {
        t.contains("vmm-guest: idle")
    });
    // 256 MiB over three nodes in 8 MiB steps; sockets 0 and 1 (two
    // CPUs each) on nodes 0 and 1.
    assert_eq!(
        qmp.hmp("info numa"),
        "3 nodes\r\nnode 0 cpus: 0 1\r\nnode 0 size: 80 MB\r\nnode 0 plugged: 0 MB\r\n\
         node 1 cpus: 2 3\r\nnode 1 size: 88 MB\r\nnode 1 plugged: 0 MB\r\n\
         node 2 cpus:\r\nnode 2 size: 88 MB\r\nnode 2 plugged: 0 MB\r\n"
    );
    let dump = dir.path().join("acpi.bin");
    qmp.ok(
        "pmemsave",
        json!({"val": 0xe0000, "size": 0x20000, "filename": dump.to_str()}),
    );
    let low = std::fs::read(&dump).expect("dump");
    let at = low.windows(4).position(|w| w == b"SLIT").expect("a SLIT");
    assert_eq!(
        &low[at + 36..at + 53],
        &[3, 0, 0, 0, 0, 0, 0, 0, 10, 20, 30, 20, 10, 25, 30, 25, 10]
    );
    qmp.ok("quit", json!({}));
}

#[test]
fn numa_start_up_errors_are_qemus() {
    let fails = |args: &[&str], text: &str| {
        let mut all = vec!["-nodefaults", "-S", "-m", "256"];
        all.extend_from_slice(args);
        start_fails(&all, text);
    };
    fails(
        &["-numa", "node,memdev=nope"],
        "-numa node,memdev=nope: memdev=nope is ambiguous",
    );
    fails(
        &[
            "-object",
            "memory-backend-ram,id=m0,size=128M",
            "-numa",
            "node,memdev=m0",
            "-numa",
            "node,memdev=m0",
        ],
        "memory backend m0 is used multiple times. Each -numa option must use a different memdev value.",
    );
    fails(
        &["-numa", "node,mem=128"],
        "total memory for NUMA nodes (0x8000000) should equal RAM size (0x10000000)",
    );
    fails(&["-numa", "node,nodeid=1"], "numa: Node ID missing: 0");
    fails(
        &[
            "-object",
            "memory-backend-ram,id=a,size=134218000",
            "-object",
            "memory-backend-ram,id=b,size=134217456",
            "-numa",
            "node,memdev=a",
            "-numa",
            "node,memdev=b",
        ],
        "memdev=a: node 0's memory (0x8000110 bytes) is not a multiple of the page size",
    );
    fails(
        &["-machine", "none", "-numa", "node"],
        "NUMA is not supported by this machine-type",
    );
    // CPUs left out of an explicit mapping go to node 0, with QEMU's
    // warning.
    let mut vmm = VmmProcess::start(&[
        "-nodefaults",
        "-S",
        "-smp",
        "2",
        "-numa",
        "node,cpus=0",
        "-numa",
        "node",
    ]);
    vmm.qmp().ok("quit", json!({}));
    vmm.wait_exit();
    let err = vmm.stderr();
    assert!(
        err.contains(
            "warning: CPU(s) not present in any NUMA nodes: CPU 1 [socket-id: 1, core-id: 0, thread-id: 0]"
        ),
        "{err}"
    );
}

/// The guest-physical RAM ranges of `pid`'s maps whose line contains
/// `needle`.
fn mapped_lines(pid: u32, needle: &str) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// `-mem-path`: guest RAM is a private mapping of a file, a fresh
/// unlinked one in a directory (named as QEMU names it) or the file
/// given, created at RAM's size; `-mem-prealloc` touches it all.
#[test]
fn mem_path_backs_guest_ram_with_a_file() {
    let dir = TempDir::new("mem-path");
    let serial = dir.path().join("serial.log");
    let d = dir.path().to_str().expect("path").to_string();
    let args = guest_args("idle", &serial, &["-mem-path", &d, "-mem-prealloc"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    vmm_tests::wait_for_text(&serial, std::time::Duration::from_secs(30), |t| {
        t.contains("vmm-guest: idle")
    });
    let lines = mapped_lines(vmm.child.id(), &format!("{d}/qemu_back_mem.pc.ram."));
    assert!(!lines.is_empty(), "no RAM mapping from {d}");
    assert!(
        lines
            .iter()
            .all(|l| l.ends_with("(deleted)") && l.contains(" rw-p ")),
        "{lines:?}"
    );
    drop(vmm);

    let file = dir.path().join("ram.img");
    let f = file.to_str().expect("path").to_string();
    let serial2 = dir.path().join("serial2.log");
    let args = guest_args("idle", &serial2, &["-mem-path", &f]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    vmm_tests::wait_for_text(&serial2, std::time::Duration::from_secs(30), |t| {
        t.contains("vmm-guest: idle")
    });
    assert_eq!(
        std::fs::metadata(&file).map(|m| m.len()).ok(),
        Some(256 << 20)
    );
    assert!(!mapped_lines(vmm.child.id(), &f).is_empty());
}

/// A path that cannot hold RAM: QEMU's error, then ordinary RAM; with
/// `-mem-prealloc` start-up fails instead.
#[test]
fn mem_path_that_cannot_be_opened_falls_back_unless_prealloc() {
    let text =
        "can't open backing store /nonexistent/dir/ram for guest RAM: No such file or directory";
    const ARGS: &[&str] = &[
        "-nodefaults",
        "-S",
        "-m",
        "64",
        "-mem-path",
        "/nonexistent/dir/ram",
    ];
    let mut vmm = VmmProcess::start(ARGS);
    let mut qmp = vmm.qmp();
    assert_eq!(qmp.ok("query-status", json!({}))["status"], "prelaunch");
    qmp.ok("quit", json!({}));
    vmm.wait_exit();
    let err = vmm.stderr();
    assert!(err.contains(text), "{err}");
    assert!(
        err.contains("falling back to regular RAM allocation."),
        "{err}"
    );
    start_fails(&[ARGS, &["-mem-prealloc"]].concat(), text);
}
