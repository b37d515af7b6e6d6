//! device_add and device_del through the vmm binary: a device added
//! before the guest first runs is built as `-device` builds it (tree,
//! query-pci, query-block) and the guest drives it; QEMU 2.11's errors,
//! with their classes; hot-plug into a guest that ran, and device_del,
//! refused as QEMU refuses a device that cannot be hot-plugged.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vmm_tests::{generic, guest_args, run_vmm, wait_for_text, QmpClient, TempDir, VmmProcess};

fn make_image(dir: &Path, name: &str, size: usize) -> PathBuf {
    let img = dir.join(name);
    let mut data = vec![0u8; size];
    data[..16].copy_from_slice(b"vmm-test-disk!!!");
    std::fs::write(&img, &data).expect("image");
    img
}

/// The test guest, stopped before it runs (`-S`), with the drives
/// `d0` (and `d1`) on raw images and no disk device yet.
fn start_stopped(dir: &Path, test: &str, serial: &Path) -> (VmmProcess, QmpClient) {
    let d0 = format!(
        "file={},if=none,id=d0,format=raw",
        make_image(dir, "d0.raw", 1 << 20).display()
    );
    let d1 = format!(
        "file={},if=none,id=d1,format=raw",
        make_image(dir, "d1.raw", 1 << 20).display()
    );
    let args = guest_args(
        &format!("{test},idle"),
        serial,
        &["-S", "-drive", &d0, "-drive", &d1],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    let qmp = vmm.qmp();
    (vmm, qmp)
}

/// query-pci's functions on bus 0.
fn pci_devices(c: &mut QmpClient) -> Vec<Value> {
    let pci = c.ok("query-pci", json!({}));
    pci[0]["devices"].as_array().cloned().unwrap_or_default()
}

/// query-block's `qdev` of drive `device`.
fn block_qdev(c: &mut QmpClient, device: &str) -> Value {
    let blocks = c.ok("query-block", json!({}));
    blocks
        .as_array()
        .and_then(|a| a.iter().find(|b| b["device"] == device))
        .map(|b| b["qdev"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn a_device_added_before_the_guest_runs_serves_the_guest() {
    let dir = TempDir::new("devadd");
    let serial = dir.path().join("com1.log");
    let (vmm, mut c) = start_stopped(dir.path(), "virtio-blk", &serial);
    assert_eq!(
        c.ok(
            "device_add",
            json!({"driver": "virtio-blk-pci", "drive": "d0", "id": "vd0", "serial": "vmm-disk-1"})
        ),
        json!({})
    );
    // The tree has it as -device would, marked hot-plugged as QEMU
    // marks every device added after machine init.
    let props: Vec<Value> = c
        .ok("qom-list", json!({"path": "/machine/peripheral/vd0"}))
        .as_array()
        .cloned()
        .unwrap_or_default();
    let has = |name: &str, ty: &str| props.iter().any(|p| p["name"] == name && p["type"] == ty);
    assert!(
        has("virtio-backend", "child<virtio-blk-device>"),
        "{props:?}"
    );
    assert!(has("parent_bus", "link<bus>"), "{props:?}");
    assert_eq!(c.qom_get("/machine/peripheral/vd0", "drive"), "d0");
    assert_eq!(c.qom_get("/machine/peripheral/vd0", "serial"), "vmm-disk-1");
    assert_eq!(c.qom_get("/machine/peripheral/vd0", "addr"), 0x10);
    assert_eq!(c.qom_get("/machine/peripheral/vd0", "hotplugged"), true);
    assert_eq!(
        c.qom_get("/machine/peripheral/vd0", "type"),
        "virtio-blk-pci"
    );
    // query-pci and query-block see it.
    let blk = pci_devices(&mut c)
        .into_iter()
        .find(|d| d["id"] == json!({"device": 0x1001, "vendor": 0x1af4}))
        .expect("virtio-blk in query-pci");
    assert_eq!(blk["slot"], 2);
    assert_eq!(blk["qdev_id"], "vd0");
    assert_eq!(
        block_qdev(&mut c, "d0"),
        "/machine/peripheral/vd0/virtio-backend"
    );
    // The guest drives it once it runs.
    c.ok("cont", json!({}));
    let out = wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains("ok virtio-blk") || l.contains("fail")
    });
    assert!(out.contains("ok virtio-blk serial=vmm-disk-1"), "{out}");
    let data = std::fs::read(dir.path().join("d0.raw")).expect("image");
    for i in 0..4096 {
        assert_eq!(
            data[8 * 512 + i],
            (i as u8).wrapping_mul(7).wrapping_add(3),
            "byte {i}"
        );
    }
    // Now it is a hot-plug, which vmm has not got; and no unplug.
    let refused = generic("Device 'virtio-blk-pci' does not support hotplugging");
    assert_eq!(
        c.err(
            "device_add",
            json!({"driver": "virtio-blk-pci", "drive": "d1", "id": "vd1"})
        ),
        refused
    );
    assert_eq!(c.err("device_del", json!({"id": "vd0"})), refused);
    // Stopped after running is not prelaunch either.
    c.ok("stop", json!({}));
    assert_eq!(
        c.err(
            "device_add",
            json!({"driver": "virtio-blk-pci", "drive": "d1"})
        ),
        refused
    );
    // The refused device took nothing: d1 is still free.
    assert_eq!(block_qdev(&mut c, "d1"), Value::Null);
    drop(vmm);
}

#[test]
fn device_add_answers_qemus_errors() {
    let dir = TempDir::new("devadd-err");
    let serial = dir.path().join("com1.log");
    let (_vmm, mut c) = start_stopped(dir.path(), "idle", &serial);
    let mut err = |args: Value| c.err("device_add", args);
    assert_eq!(err(json!({})), generic("Parameter 'driver' is missing"));
    assert_eq!(
        err(json!({"driver": "nope"})),
        generic("'nope' is not a valid device model name")
    );
    // QMP has no help: it is a driver name like any other.
    assert_eq!(
        err(json!({"driver": "help"})),
        generic("'help' is not a valid device model name")
    );
    assert_eq!(
        err(json!({"driver": "secret"})),
        generic("'secret' is not a valid device model name")
    );
    assert_eq!(
        err(json!({"driver": "pci-device"})),
        generic("Parameter 'driver' expects non-abstract device type")
    );
    assert_eq!(
        err(json!({"driver": "PIIX3"})),
        generic("Parameter 'driver' expects pluggable device type")
    );
    assert_eq!(
        err(json!({"driver": "virtio-blk-pci", "id": "1x", "drive": "d0"})),
        generic("Parameter 'id' expects an identifier")
    );
    assert_eq!(
        err(json!({"driver": "virtio-blk-pci", "bus": "isa.0", "drive": "d0"})),
        generic("Device 'virtio-blk-pci' can't go on ISA bus")
    );
    assert_eq!(
        err(json!({"driver": "virtio-blk-pci", "bus": "pci.9", "drive": "d0"})),
        generic("Bus 'pci.9' not found")
    );
    // ISA takes no hot-plug in QEMU, and device_add is one even before
    // the guest runs.
    assert_eq!(
        err(json!({"driver": "isa-debug-exit", "id": "dbg"})),
        generic("Bus 'isa.0' does not support hotplugging")
    );
    // An anonymous device that fails still used up its name.
    assert_eq!(
        err(json!({"driver": "virtio-blk-pci", "drive": "d0", "foo": 1})),
        generic("Property '.foo' not found")
    );
    assert_eq!(
        err(json!({"driver": "virtio-blk-pci", "drive": "nope"})),
        generic("Property 'virtio-blk-device.drive' can't find value 'nope'")
    );
    assert_eq!(
        err(json!({"driver": "virtio-blk-pci"})),
        generic("drive property not set")
    );
    assert_eq!(
        err(json!({"driver": "virtio-blk-pci", "drive": "d0", "addr": "1"})),
        generic("PCI: slot 1 function 0 not available for virtio-blk-pci, in use by PIIX3")
    );
    // The alias, and an anonymous device: the command line's
    // isa-debug-exit is device[0], the failures above from `.foo` on
    // took device[1] to device[5].
    c.ok("device_add", json!({"driver": "virtio-blk", "drive": "d0"}));
    assert_eq!(
        c.ok(
            "qom-get",
            json!({"path": "/machine/peripheral-anon/device[5]", "property": "drive"})
        ),
        "d0"
    );
    assert_eq!(
        block_qdev(&mut c, "d0"),
        "/machine/peripheral-anon/device[5]/virtio-backend"
    );
    assert_eq!(
        c.err(
            "device_add",
            json!({"driver": "virtio-blk-pci", "drive": "d0", "id": "vd0"})
        ),
        generic("Drive 'd0' is already in use by another device")
    );
    c.ok(
        "device_add",
        json!({"driver": "virtio-blk-pci", "drive": "d1", "id": "vd1", "addr": "5"}),
    );
    assert_eq!(
        c.err(
            "device_add",
            json!({"driver": "virtio-blk-pci", "drive": "d1", "id": "vd1"})
        ),
        generic("Duplicate ID 'vd1' for device")
    );
    let slots: Vec<Value> = pci_devices(&mut c)
        .iter()
        .map(|d| d["slot"].clone())
        .collect();
    assert_eq!(
        slots,
        json!([0, 1, 1, 1, 2, 5])
            .as_array()
            .cloned()
            .unwrap_or_default()
    );
    // device_del: unknown ids, and no unplug before the guest runs either.
    assert_eq!(
        c.err("device_del", json!({"id": "nope"})),
        (
            "DeviceNotFound".to_string(),
            "Device 'nope' not found".to_string()
        )
    );
    assert_eq!(
        c.err("device_del", json!({"id": "vd1"})),
        generic("Device 'virtio-blk-pci' does not support hotplugging")
    );
    assert_eq!(
        c.err("device_del", json!({"id": "/machine/unattached/device[1]"})),
        generic("Device 'i440FX' does not support hotplugging")
    );
    assert_eq!(
        c.err(
            "device_del",
            json!({"id": "/machine/peripheral-anon/device[0]"})
        ),
        generic("Bus 'isa.0' does not support hotplugging")
    );
    assert_eq!(
        c.err("device_del", json!({"id": "/machine/i440fx"})),
        generic("Bus 'main-system-bus' does not support hotplugging")
    );
    assert_eq!(
        c.err("device_del", json!({"id": "/objects"})),
        generic("/objects is not a hotpluggable device")
    );
}

#[test]
fn hmp_device_add_and_device_del() {
    let dir = TempDir::new("devadd-hmp");
    let serial = dir.path().join("com1.log");
    let (_vmm, mut c) = start_stopped(dir.path(), "idle", &serial);
    let list = c.hmp("device_add help");
    assert!(list.starts_with("Storage devices:\r\n"), "{list}");
    assert!(
        list.contains("name \"virtio-blk-pci\", bus PCI, alias \"virtio-blk\"\r\n"),
        "{list}"
    );
    assert!(
        list.contains("\r\nMisc devices:\r\nname \"isa-debug-exit\", bus ISA\r\n"),
        "{list}"
    );
    assert_eq!(c.hmp("device_add ?"), list);
    let props = c.hmp("device_add virtio-blk-pci,help");
    assert!(
        props.contains(
            "virtio-blk-pci.drive=str (Node name or ID of a block device to use as a backend)\r\n"
        ),
        "{props}"
    );
    assert!(props.contains("virtio-blk-pci.secs=uint32\r\n"), "{props}");
    assert_eq!(c.hmp("device_add virtio-blk-pci,drive=d0,id=vd0"), "");
    assert_eq!(c.qom_get("/machine/peripheral/vd0", "drive"), "d0");
    assert_eq!(
        c.hmp("device_add virtio-blk-pci,drive=d0,id=vd0"),
        "Duplicate ID 'vd0' for device\r\n"
    );
    assert_eq!(
        c.hmp("device_add nope"),
        "'nope' is not a valid device model name\r\n"
    );
    assert_eq!(
        c.hmp("device_del vd0"),
        "Device 'virtio-blk-pci' does not support hotplugging\r\n"
    );
    assert_eq!(c.hmp("device_del nope"), "Device 'nope' not found\r\n");
}

#[test]
fn the_command_line_takes_the_same_path() {
    let (status, _, err) = run_vmm(&["-S", "-nodefaults", "-device", "nope"]);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("-device nope: 'nope' is not a valid device model name"),
        "{err}"
    );
    let (_, _, err) = run_vmm(&["-S", "-nodefaults", "-device", "virtio-blk-pci,foo=1"]);
    assert!(err.contains("Property '.foo' not found"), "{err}");
    let (_, _, err) = run_vmm(&["-S", "-machine", "none", "-device", "virtio-blk-pci"]);
    assert!(
        err.contains("No 'PCI' bus found for device 'virtio-blk-pci'"),
        "{err}"
    );
}
