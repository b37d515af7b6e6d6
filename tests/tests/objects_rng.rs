//! The rng backends through the vmm binary: `rng-random` and `rng-egd`
//! made with -object, object-add and HMP object_add, their properties,
//! QEMU 2.11's errors, and the chardev an rng-egd holds (a real EGD peer
//! on a unix socket) until object-del.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;
use vmm_tests::{generic, start_fails, QmpClient, TempDir, VmmProcess};

fn start(extra: &[&str]) -> (VmmProcess, QmpClient) {
    VmmProcess::start_paused(extra)
}

fn set_err(qmp: &mut QmpClient, path: &str, property: &str, value: Value) -> (String, String) {
    qmp.err(
        "qom-set",
        json!({ "path": path, "property": property, "value": value }),
    )
}

fn add_err(qmp: &mut QmpClient, qom_type: &str, id: &str, props: Value) -> (String, String) {
    qmp.err(
        "object-add",
        json!({"qom-type": qom_type, "id": id, "props": props}),
    )
}

const DENIED: &str = "Insufficient permission to perform this operation";

/// Whether process `pid` has a descriptor open on `file`.
fn holds_open(pid: u32, file: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|target| target == file)
}

#[test]
fn rng_random() {
    let dir = TempDir::new("rng-random");
    let pool = dir.path().join("pool");
    std::fs::write(&pool, [7u8; 64]).expect("write pool");
    let pool_arg = format!("rng-random,id=r0,filename={}", pool.display());
    let (vmm, mut qmp) = start(&["-object", &pool_arg]);
    let pid = vmm.child.id();

    let list = qmp.qom_props("/objects/r0");
    let expected: BTreeMap<String, String> = [
        ("type", "string"),
        ("opened", "bool"),
        ("filename", "string"),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect();
    assert_eq!(list, expected);
    assert_eq!(qmp.qom_get("/objects/r0", "type"), "rng-random");
    assert_eq!(qmp.qom_get("/objects/r0", "opened"), json!(true));
    assert_eq!(qmp.qom_get("/objects/r0", "filename"), json!(pool.to_str()));
    // The file is open from completion on.
    assert!(holds_open(pid, &pool));

    // Once open, the file cannot change and `opened` stays true.
    assert_eq!(
        set_err(&mut qmp, "/objects/r0", "filename", json!("/dev/urandom")),
        generic(DENIED)
    );
    assert_eq!(
        set_err(&mut qmp, "/objects/r0", "opened", json!(false)),
        generic(DENIED)
    );
    qmp.ok(
        "qom-set",
        json!({"path": "/objects/r0", "property": "opened", "value": true}),
    );

    // QEMU 2.11's default file.
    qmp.ok("object-add", json!({"qom-type": "rng-random", "id": "r1"}));
    assert_eq!(qmp.qom_get("/objects/r1", "filename"), "/dev/random");
    assert_eq!(qmp.qom_get("/objects/r1", "opened"), json!(true));

    assert_eq!(
        add_err(
            &mut qmp,
            "rng-random",
            "bad",
            json!({"filename": "/nonexistent"})
        ),
        generic("Could not open '/nonexistent': No such file or directory")
    );
    assert_eq!(
        add_err(&mut qmp, "rng-random", "bad", json!({"filename": 1})),
        generic("Invalid parameter type for 'filename', expected: string")
    );
    assert!(!qmp.qom_props("/objects").contains_key("bad"));

    // object-del closes the file.
    qmp.ok("object-del", json!({"id": "r0"}));
    assert!(!holds_open(pid, &pool));
    qmp.ok("object-del", json!({"id": "r1"}));

    // The human monitor's object_add and object_del, and the tree.
    let line = format!("object_add rng-random,id=h,filename={}", pool.display());
    assert_eq!(qmp.hmp(&line), "");
    assert!(holds_open(pid, &pool));
    let tree = qmp.hmp("info qom-tree /objects");
    assert!(tree.contains("/h (rng-random)"), "{tree}");
    assert_eq!(qmp.hmp("object_del h"), "");
    assert!(!holds_open(pid, &pool));

    start_fails(
        &[
            "-nodefaults",
            "-object",
            "rng-random,id=r,filename=/nonexistent",
        ],
        "-object rng-random,id=r,filename=/nonexistent: \
         Could not open '/nonexistent': No such file or directory",
    );
}

/// A tiny EGD server for one client: answers each blocking read (0x02
/// LEN) with LEN bytes; says when the client connected, and returns the
/// commands it got once the client left.
fn egd_server(
    listener: UnixListener,
    connected: mpsc::Sender<()>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return Vec::new();
        };
        let _ = connected.send(());
        let mut seen = Vec::new();
        let mut cmd = [0u8; 2];
        while s.read_exact(&mut cmd).is_ok() {
            seen.extend_from_slice(&cmd);
            if cmd[0] == 0x02 && s.write_all(&vec![0x5a; cmd[1].into()]).is_err() {
                break;
            }
        }
        seen
    })
}

#[test]
fn rng_egd() {
    let dir = TempDir::new("rng-egd");
    let sock = dir.path().join("egd.sock");
    let (tx, connected) = mpsc::channel();
    let server = egd_server(UnixListener::bind(&sock).expect("bind"), tx);
    let chardev = format!("socket,id=c0,path={}", sock.display());
    let (_vmm, mut qmp) = start(&[
        "-chardev",
        &chardev,
        "-object",
        "rng-egd,id=egd0,chardev=c0",
        "-chardev",
        "null,id=s0",
        "-serial",
        "chardev:s0",
    ]);
    connected
        .recv_timeout(Duration::from_secs(10))
        .expect("vmm connected to the EGD server");

    let list = qmp.qom_props("/objects/egd0");
    assert_eq!(list.get("chardev").map(String::as_str), Some("string"));
    assert_eq!(list.get("opened").map(String::as_str), Some("bool"));
    assert_eq!(list.get("type").map(String::as_str), Some("string"));
    assert_eq!(list.len(), 3, "{list:?}");
    assert_eq!(qmp.qom_get("/objects/egd0", "type"), "rng-egd");
    assert_eq!(qmp.qom_get("/objects/egd0", "chardev"), "c0");
    assert_eq!(qmp.qom_get("/objects/egd0", "opened"), json!(true));
    let chardevs = qmp.ok("query-chardev", json!({}));
    let c0 = chardevs
        .as_array()
        .and_then(|l| l.iter().find(|c| c["label"] == "c0"))
        .expect("c0 listed");
    assert_eq!(c0["frontend-open"], json!(true));

    // The rng-egd is c0's frontend: c0 stays, and no one else gets it.
    assert_eq!(
        qmp.err("chardev-remove", json!({"id": "c0"})),
        generic("Chardev 'c0' is busy")
    );
    assert_eq!(
        add_err(&mut qmp, "rng-egd", "egd1", json!({"chardev": "c0"})),
        generic("Device 'c0' is in use")
    );
    // A serial port's chardev is taken too.
    assert_eq!(
        add_err(&mut qmp, "rng-egd", "egd1", json!({"chardev": "s0"})),
        generic("Device 's0' is in use")
    );
    assert_eq!(
        add_err(&mut qmp, "rng-egd", "egd1", json!({"chardev": "nope"})),
        (
            "DeviceNotFound".to_string(),
            "Device 'nope' not found".to_string()
        )
    );
    assert_eq!(
        add_err(&mut qmp, "rng-egd", "egd1", json!({})),
        generic("Parameter 'chardev' expects a valid character device")
    );
    assert!(!qmp.qom_props("/objects").contains_key("egd1"));
    assert_eq!(
        set_err(&mut qmp, "/objects/egd0", "chardev", json!("s0")),
        generic(DENIED)
    );
    assert_eq!(
        set_err(&mut qmp, "/objects/egd0", "opened", json!(false)),
        generic(DENIED)
    );

    // One made by object-add on a chardev made by chardev-add: it does
    // not follow chardev-change, and object-del gives the chardev back.
    let null_backend = json!({"type": "null", "data": {}});
    qmp.ok("chardev-add", json!({"id": "c1", "backend": null_backend}));
    qmp.ok(
        "object-add",
        json!({"qom-type": "rng-egd", "id": "egd1", "props": {"chardev": "c1"}}),
    );
    assert_eq!(qmp.qom_get("/objects/egd1", "chardev"), "c1");
    assert_eq!(
        qmp.err(
            "chardev-change",
            json!({"id": "c1", "backend": null_backend})
        ),
        generic("Chardev user does not support chardev hotswap")
    );
    assert_eq!(
        qmp.err("chardev-remove", json!({"id": "c1"})),
        generic("Chardev 'c1' is busy")
    );
    qmp.ok("object-del", json!({"id": "egd1"}));
    qmp.ok("chardev-remove", json!({"id": "c1"}));

    // The human monitor's object_add takes the chardev as well.
    qmp.ok("chardev-add", json!({"id": "c2", "backend": null_backend}));
    assert_eq!(qmp.hmp("object_add rng-egd,id=h,chardev=c2"), "");
    assert_eq!(qmp.qom_get("/objects/h", "chardev"), "c2");
    assert_eq!(
        qmp.err("chardev-remove", json!({"id": "c2"})),
        generic("Chardev 'c2' is busy")
    );
    assert_eq!(qmp.hmp("object_del h"), "");
    qmp.ok("chardev-remove", json!({"id": "c2"}));

    // Deleting the -object one frees c0; removing c0 ends the
    // connection. Nothing asked for entropy, so no command was sent.
    qmp.ok("object-del", json!({"id": "egd0"}));
    let c0_open = qmp
        .ok("query-chardev", json!({}))
        .as_array()
        .and_then(|l| l.iter().find(|c| c["label"] == "c0").cloned())
        .expect("c0 listed")["frontend-open"]
        .clone();
    assert_eq!(c0_open, json!(false));
    qmp.ok("chardev-remove", json!({"id": "c0"}));
    assert_eq!(server.join().expect("server"), Vec::<u8>::new());

    start_fails(
        &["-nodefaults", "-object", "rng-egd,id=e,chardev=nope"],
        "-object rng-egd,id=e,chardev=nope: Device 'nope' not found",
    );
}
