//! The object model through the vmm binary: the tree after start,
//! qom-list/qom-get/qom-set, user-creatable objects (object-add,
//! object-del, -object), query-iothreads and query-memdev, and
//! qom-list-types / device-list-properties against QEMU 2.11.0.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use vmm_tests::{generic, start_fails, Oracle, QmpClient, TempDir, VmmProcess};

fn start(extra: &[&str]) -> (VmmProcess, QmpClient) {
    let mut args = vec!["-smp", "2"];
    args.extend_from_slice(extra);
    VmmProcess::start_paused(&args)
}

#[test]
fn tree_after_start() {
    let (_vmm, mut qmp) = start(&[
        "-serial",
        "null",
        "-device",
        "isa-debug-exit,id=dbg,iobase=0xf4,iosize=4",
    ]);
    let root = qmp.qom_props("/");
    assert_eq!(root["machine"], "child<pc-i440fx-2.11-machine>");
    assert_eq!(root["objects"], "child<container>");
    assert_eq!(root["chardevs"], "child<container>");
    assert_eq!(root["type"], "string");
    let machine = qmp.qom_props("/machine");
    for c in ["peripheral", "peripheral-anon", "unattached"] {
        assert_eq!(machine[c], "child<container>", "{machine:?}");
    }
    assert_eq!(qmp.qom_get("/machine", "type"), "pc-i440fx-2.11-machine");

    // Every vCPU is where query-cpus says it is.
    let cpus = qmp.ok("query-cpus", json!({}));
    let cpus = cpus.as_array().expect("cpus");
    assert_eq!(cpus.len(), 2);
    for (i, cpu) in cpus.iter().enumerate() {
        let path = cpu["qom_path"].as_str().expect("qom_path");
        assert_eq!(path, format!("/machine/unattached/device[{i}]"));
        assert_eq!(qmp.qom_get(path, "type"), "qemu64-x86_64-cpu");
        assert_eq!(qmp.qom_get(path, "apic-id"), json!(i));
        assert_eq!(qmp.qom_get(path, "realized"), json!(true));
    }

    // The board's ISA devices follow the CPUs.
    let unattached = qmp.qom_props("/machine/unattached");
    let kinds: BTreeSet<&str> = unattached
        .values()
        .filter_map(|t| t.strip_prefix("child<")?.strip_suffix('>'))
        .collect();
    for t in ["mc146818rtc", "isa-serial", "i8042", "qemu64-x86_64-cpu"] {
        assert!(kinds.contains(t), "{t} missing: {unattached:?}");
    }
    let serial = unattached
        .iter()
        .find(|(_, t)| *t == "child<isa-serial>")
        .map(|(n, _)| format!("/machine/unattached/{n}"))
        .expect("serial");
    assert_eq!(qmp.qom_get(&serial, "iobase"), json!(0x3f8));
    assert_eq!(qmp.qom_get(&serial, "irq"), json!(4));
    assert_eq!(qmp.qom_get(&serial, "chardev"), json!("serial0"));

    // -device with an id lands under peripheral, with its properties.
    assert_eq!(
        qmp.qom_props("/machine/peripheral")["dbg"],
        "child<isa-debug-exit>"
    );
    assert_eq!(
        qmp.qom_get("/machine/peripheral/dbg", "iobase"),
        json!(0xf4)
    );
    assert_eq!(qmp.qom_get("/machine/peripheral/dbg", "iosize"), json!(4));
    // A partial path finds the same object; a child reads as its path.
    assert_eq!(qmp.qom_get("dbg", "iosize"), json!(4));
    assert_eq!(
        qmp.qom_get("/machine", "peripheral"),
        json!("/machine/peripheral")
    );
    // i8042's I/O regions are children, as QEMU's instance init makes.
    let i8042 = unattached
        .iter()
        .find(|(_, t)| *t == "child<i8042>")
        .map(|(n, _)| format!("/machine/unattached/{n}"))
        .expect("i8042");
    let kbd = qmp.qom_props(&i8042);
    assert_eq!(kbd["i8042-data[0]"], "child<qemu:memory-region>");
    assert_eq!(kbd["a20[0]"], "link<irq>");
    assert_eq!(
        qmp.qom_get(&format!("{i8042}/i8042-cmd[0]"), "addr"),
        json!(0x64)
    );
}

#[test]
fn anonymous_device_goes_to_peripheral_anon() {
    let (_vmm, mut qmp) = start(&["-device", "isa-debug-exit"]);
    // Two objects match this partial path.
    assert_eq!(
        qmp.err("qom-list", json!({"path": "device[0]"})),
        generic("Path 'device[0]' is ambiguous")
    );
    assert_eq!(
        qmp.err("qom-get", json!({"path": "device[0]", "property": "type"})),
        (
            "DeviceNotFound".to_string(),
            "Device 'device[0]' not found".to_string()
        )
    );
    let anon = qmp.qom_props("/machine/peripheral-anon");
    assert_eq!(anon["device[0]"], "child<isa-debug-exit>");
    assert_eq!(
        qmp.qom_get("/machine/peripheral-anon/device[0]", "iobase"),
        json!(0x501)
    );
    assert_eq!(
        qmp.err(
            "qom-set",
            json!({"path": "/machine/peripheral-anon/device[0]", "property": "iobase", "value": 1})
        ),
        generic("Attempt to set property 'iobase' on anonymous device (type 'isa-debug-exit') after it was realized")
    );
}

#[test]
fn qom_errors_are_qemus() {
    let (_vmm, mut qmp) = start(&["-device", "isa-debug-exit,id=dbg"]);
    assert_eq!(
        qmp.err("qom-list", json!({"path": "/nope"})),
        (
            "DeviceNotFound".to_string(),
            "Device '/nope' not found".to_string()
        )
    );
    assert_eq!(
        qmp.err(
            "qom-get",
            json!({"path": "/machine/nope", "property": "type"})
        ),
        (
            "DeviceNotFound".to_string(),
            "Device '/machine/nope' not found".to_string()
        )
    );
    assert_eq!(
        qmp.err("qom-get", json!({"path": "/machine", "property": "foo"})),
        generic("Property '.foo' not found")
    );
    assert_eq!(
        qmp.err(
            "qom-set",
            json!({"path": "/machine", "property": "foo", "value": 1})
        ),
        generic("Property '.foo' not found")
    );
    // type and children have no setter.
    assert_eq!(
        qmp.err(
            "qom-set",
            json!({"path": "/machine", "property": "type", "value": "x"})
        ),
        generic("Insufficient permission to perform this operation")
    );
    assert_eq!(
        qmp.err(
            "qom-set",
            json!({"path": "/machine", "property": "unattached", "value": "x"})
        ),
        generic("Insufficient permission to perform this operation")
    );
    assert_eq!(
        qmp.err(
            "qom-set",
            json!({"path": "/machine/peripheral/dbg", "property": "iobase", "value": 1})
        ),
        generic("Attempt to set property 'iobase' on device 'dbg' (type 'isa-debug-exit') after it was realized")
    );
    assert_eq!(
        qmp.err(
            "qom-set",
            json!({"path": "/machine", "property": "mem-merge", "value": "yes"})
        ),
        generic("Invalid parameter type for 'mem-merge', expected: boolean")
    );
}

#[test]
fn qom_set_then_get() {
    let (_vmm, mut qmp) = start(&[]);
    assert_eq!(qmp.qom_get("/machine", "kernel"), "");
    qmp.ok(
        "qom-set",
        json!({"path": "/machine", "property": "append", "value": "console=ttyS0"}),
    );
    assert_eq!(qmp.qom_get("/machine", "append"), "console=ttyS0");
    qmp.ok(
        "qom-set",
        json!({"path": "/machine", "property": "mem-merge", "value": false}),
    );
    assert_eq!(qmp.qom_get("/machine", "mem-merge"), json!(false));

    // A live object: the iothread's polling bound, seen by query-iothreads.
    qmp.ok("object-add", json!({"qom-type": "iothread", "id": "io0"}));
    assert_eq!(qmp.qom_get("/objects/io0", "poll-max-ns"), json!(32768));
    qmp.ok(
        "qom-set",
        json!({"path": "/objects/io0", "property": "poll-max-ns", "value": 1000}),
    );
    assert_eq!(qmp.qom_get("/objects/io0", "poll-max-ns"), json!(1000));
    let threads = qmp.ok("query-iothreads", json!({}));
    assert_eq!(threads[0]["poll-max-ns"], json!(1000));
    assert_eq!(
        qmp.err(
            "qom-set",
            json!({"path": "/objects/io0", "property": "poll-grow", "value": -1})
        ),
        generic("poll-grow value must be in range [0, 9223372036854775807]")
    );
}

#[test]
fn iothread_is_a_real_thread() {
    let (vmm, mut qmp) = start(&["-object", "iothread,id=cmdline,poll-grow=2"]);
    qmp.ok(
        "object-add",
        json!({"qom-type": "iothread", "id": "io1", "props": {"poll-shrink": 4}}),
    );
    let threads = qmp.ok("query-iothreads", json!({}));
    let threads = threads.as_array().expect("list");
    assert_eq!(threads.len(), 2);
    assert_eq!(threads[0]["id"], "cmdline");
    assert_eq!(threads[0]["poll-grow"], json!(2));
    assert_eq!(threads[1]["id"], "io1");
    assert_eq!(threads[1]["poll-shrink"], json!(4));
    assert_eq!(threads[1]["poll-max-ns"], json!(32768));
    let pid = vmm.child.id();
    let tid = threads[1]["thread-id"].as_i64().expect("thread-id");
    let task = format!("/proc/{pid}/task/{tid}");
    assert!(std::path::Path::new(&task).exists(), "{task}");
    let comm = std::fs::read_to_string(format!("{task}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "IO io1");

    qmp.ok("object-del", json!({"id": "io1"}));
    assert!(
        !std::path::Path::new(&task).exists(),
        "{task} outlived object-del"
    );
    let threads = qmp.ok("query-iothreads", json!({}));
    assert_eq!(threads.as_array().map(Vec::len), Some(1));
}

#[test]
fn object_add_and_del_errors() {
    let (_vmm, mut qmp) = start(&[]);
    let add = |qmp: &mut QmpClient, t: &str, id: &str, props: Value| {
        qmp.err(
            "object-add",
            json!({"qom-type": t, "id": id, "props": props}),
        )
    };
    assert_eq!(
        add(&mut qmp, "bogus", "x", json!({})),
        generic("invalid object type: bogus")
    );
    assert_eq!(
        add(&mut qmp, "isa-serial", "x", json!({})),
        generic("object type 'isa-serial' isn't supported by object-add")
    );
    assert_eq!(
        add(&mut qmp, "memory-backend", "x", json!({})),
        generic("object type 'memory-backend' is abstract")
    );
    assert_eq!(
        add(&mut qmp, "iothread", "x", json!({"nope": 1})),
        generic("Property '.nope' not found")
    );
    assert_eq!(
        qmp.err(
            "object-add",
            json!({"qom-type": "iothread", "id": "x", "props": [1]})
        ),
        generic("Invalid parameter type for 'props', expected: dict")
    );
    qmp.ok("object-add", json!({"qom-type": "iothread", "id": "dup"}));
    assert_eq!(
        add(&mut qmp, "iothread", "dup", json!({})),
        generic("attempt to add duplicate property 'dup' to object (type 'container')")
    );
    assert_eq!(
        qmp.err("object-del", json!({"id": "nope"})),
        generic("object 'nope' not found")
    );
    qmp.ok("object-del", json!({"id": "dup"}));
    assert_eq!(
        qmp.err("object-del", json!({"id": "dup"})),
        generic("object 'dup' not found")
    );
    // A failed object-add leaves nothing behind.
    assert_eq!(
        add(&mut qmp, "secret", "s", json!({})),
        generic("Either 'file' or 'data' must be provided")
    );
    assert!(!qmp.qom_props("/objects").contains_key("s"));
}

#[test]
fn secrets() {
    let dir = TempDir::new("secret");
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-a-file").expect("write");
    let (_vmm, mut qmp) = start(&["-object", "secret,id=cmd,data=aGVsbG8=,format=base64"]);
    assert_eq!(qmp.qom_get("/objects/cmd", "loaded"), json!(true));
    assert_eq!(qmp.qom_get("/objects/cmd", "format"), json!("base64"));
    qmp.ok(
        "object-add",
        json!({"qom-type": "secret", "id": "f", "props": {"file": file.to_str()}}),
    );
    assert_eq!(qmp.qom_get("/objects/f", "file"), json!(file.to_str()));
    let add = |qmp: &mut QmpClient, props: Value| {
        qmp.err(
            "object-add",
            json!({"qom-type": "secret", "id": "bad", "props": props}),
        )
    };
    assert_eq!(
        add(&mut qmp, json!({"data": "a", "file": "/x"})),
        generic("'file' and 'data' are mutually exclusive")
    );
    assert_eq!(
        add(&mut qmp, json!({"data": "!!!!", "format": "base64"})),
        generic("Base64 data contains invalid characters")
    );
    assert_eq!(
        add(&mut qmp, json!({"data": "a", "format": "hex"})),
        generic("Invalid parameter 'hex'")
    );
    assert_eq!(
        add(&mut qmp, json!({"file": "/nonexistent/pw"})).0,
        "GenericError"
    );
    // As in QEMU 2.11, properties stay writable once loaded; they take
    // effect when `loaded` is set again.
    qmp.ok(
        "qom-set",
        json!({"path": "/objects/f", "property": "file", "value": "/nonexistent/pw"}),
    );
    assert_eq!(
        qmp.err(
            "qom-set",
            json!({"path": "/objects/f", "property": "loaded", "value": true})
        )
        .0,
        "GenericError"
    );
    // QEMU 2.11's `loaded` reads whether `data` is set.
    assert_eq!(qmp.qom_get("/objects/f", "loaded"), json!(false));
    qmp.ok("object-del", json!({"id": "f"}));
}

/// `openssl enc -aes-256-cbc` of `plain` under the hex key and IV (with
/// PKCS#7 padding unless `nopad`); None when openssl is not installed.
fn openssl_seal(key: &str, iv: &str, plain: &[u8], nopad: bool) -> Option<Vec<u8>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new("openssl");
    cmd.args(["enc", "-aes-256-cbc", "-K", key, "-iv", iv]);
    if nopad {
        cmd.arg("-nopad");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(plain).ok()?;
    let out = child.wait_with_output().ok()?;
    assert!(out.status.success(), "openssl enc failed");
    Some(out.stdout)
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            s.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    s
}

/// Secrets encrypted with AES-256-CBC under another secret's key, as
/// QEMU 2.11's crypto/secret.c decrypts them. No command of vmm reads a
/// secret's value yet except another secret, so the decrypted secret
/// is used as the key of a later one: that one decrypts only if the
/// first came out right (32 bytes, and the right ones, or the second's
/// padding check fails).
#[test]
fn encrypted_secrets() {
    const KEY: &str = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
    const IV: &str = "000102030405060708090a0b0c0d0e0f";
    const IV2: &str = "f0e0d0c0b0a090807060504030201000";
    // The plaintext of `inner`, and the key of `outer`.
    const INNER_KEY: &[u8] = b"0123456789abcdef0123456789ABCDEF";
    let Some(inner) = openssl_seal(KEY, IV, INNER_KEY, false) else {
        eprintln!("encrypted_secrets skipped: openssl is not installed");
        return;
    };
    let inner_key_hex: String = INNER_KEY.iter().map(|b| format!("{b:02x}")).collect();
    let outer = openssl_seal(&inner_key_hex, IV2, b"the password", false).expect("openssl");
    let dir = TempDir::new("encsecret");
    let outer_file = dir.path().join("outer");
    std::fs::write(&outer_file, &outer).expect("write");

    // The master key and one encrypted secret from the command line.
    let key_arg = format!(
        "secret,id=master,format=base64,data={}",
        base64(&hex_bytes(KEY))
    );
    let inner_arg = format!(
        "secret,id=inner,keyid=master,format=base64,iv={},data={}",
        base64(&hex_bytes(IV)),
        base64(&inner)
    );
    let (_vmm, mut qmp) = start(&["-object", &key_arg, "-object", &inner_arg]);
    assert_eq!(qmp.qom_get("/objects/inner", "keyid"), json!("master"));
    // qom-get shows the ciphertext as given, never the plaintext.
    assert_eq!(qmp.qom_get("/objects/inner", "data"), json!(base64(&inner)));

    // A later object-add reads the decrypted `inner` as its key: raw
    // ciphertext from a file.
    let add = |qmp: &mut QmpClient, id: &str, props: Value| {
        qmp.execute(
            "object-add",
            json!({"qom-type": "secret", "id": id, "props": props}),
        )
    };
    let outer_props = json!({"file": outer_file.to_str(), "keyid": "inner",
                             "iv": base64(&hex_bytes(IV2))});
    let r = add(&mut qmp, "outer", outer_props.clone());
    assert_eq!(r["return"], json!({}), "{r}");
    // The same ciphertext under the master key: 32 bytes, but the wrong
    // ones; the padding check catches it.
    let mut wrong = outer_props.clone();
    wrong["keyid"] = json!("master");
    let e = qmp.err(
        "object-add",
        json!({"qom-type": "secret", "id": "w", "props": wrong}),
    );
    assert!(
        e.1.starts_with("Incorrect number of padding bytes ("),
        "{e:?}"
    );
    // openssl's base64 (lines of 64 characters) is accepted, as QEMU's
    // decoder skips newlines.
    let long = openssl_seal(KEY, IV, &[b'x'; 100], false).expect("openssl");
    let mut wrapped = base64(&long);
    wrapped.insert(64, '\n');
    wrapped.push('\n');
    let r = add(
        &mut qmp,
        "wrapped",
        json!({"data": wrapped, "format": "base64", "keyid": "master",
               "iv": base64(&hex_bytes(IV))}),
    );
    assert_eq!(r["return"], json!({}), "{r}");

    // Errors, with QEMU 2.11's texts; nothing is left behind.
    let iv = base64(&hex_bytes(IV));
    let data = base64(&inner);
    let err = |qmp: &mut QmpClient, props: Value| {
        qmp.err(
            "object-add",
            json!({"qom-type": "secret", "id": "bad", "props": props}),
        )
    };
    let cases = [
        (
            json!({"data": data, "format": "base64", "keyid": "nope", "iv": iv}),
            "No secret with id 'nope'".to_string(),
        ),
        (
            json!({"data": data, "format": "base64", "keyid": "io", "iv": iv}),
            "Object with id 'io' is not a secret".to_string(),
        ),
        (
            json!({"data": data, "format": "base64", "keyid": "short", "iv": iv}),
            "Key should be 32 bytes in length".to_string(),
        ),
        (
            json!({"data": data, "format": "base64", "keyid": "master"}),
            "IV is required to decrypt secret".to_string(),
        ),
        (
            json!({"data": data, "format": "base64", "keyid": "master",
                   "iv": base64(b"twelve bytes")}),
            "IV should be 16 bytes in length not 12".to_string(),
        ),
        (
            json!({"data": base64(&inner[..20]), "format": "base64", "keyid": "master", "iv": iv}),
            "Length 20 must be a multiple of block size 16".to_string(),
        ),
        (
            json!({"data": "%%%%", "format": "base64", "keyid": "master", "iv": iv}),
            "Base64 data contains invalid characters".to_string(),
        ),
    ];
    qmp.ok("object-add", json!({"qom-type": "iothread", "id": "io"}));
    qmp.ok(
        "object-add",
        json!({"qom-type": "secret", "id": "short", "props": {"data": "sixteen bytes!!!"}}),
    );
    for (props, text) in cases {
        assert_eq!(err(&mut qmp, props), generic(&text));
    }
    // A block whose last byte is 0x20 (more than 16), without padding.
    let unpadded = openssl_seal(KEY, IV, &[b' '; 16], true).expect("openssl");
    assert_eq!(
        err(
            &mut qmp,
            json!({"data": base64(&unpadded), "format": "base64", "keyid": "master", "iv": iv})
        ),
        generic("Incorrect number of padding bytes (32) found on decrypted data")
    );
    assert!(!qmp.qom_props("/objects").contains_key("bad"));

    // Loading again after a property changed decrypts again.
    qmp.ok(
        "qom-set",
        json!({"path": "/objects/inner", "property": "keyid", "value": "short"}),
    );
    assert_eq!(
        qmp.err(
            "qom-set",
            json!({"path": "/objects/inner", "property": "loaded", "value": true})
        ),
        generic("Key should be 32 bytes in length")
    );
    qmp.ok(
        "qom-set",
        json!({"path": "/objects/inner", "property": "keyid", "value": "master"}),
    );
    qmp.ok(
        "qom-set",
        json!({"path": "/objects/inner", "property": "loaded", "value": true}),
    );
    let r = add(&mut qmp, "outer2", outer_props);
    assert_eq!(r["return"], json!({}), "{r}");
    // A secret that names itself as its key has no data yet.
    assert_eq!(
        qmp.err(
            "object-add",
            json!({"qom-type": "secret", "id": "self", "props":
                   {"data": data, "format": "base64", "keyid": "self", "iv": iv}})
        ),
        generic("Secret with id 'self' has no data")
    );
}

/// The i440FX host bridge and its bus `pci.0` with every function
/// query-pci reports; `-device virtio-blk-pci` and `-drive if=virtio`
/// devices under /machine/peripheral and /machine/peripheral-anon, as
/// QEMU 2.11 places and numbers them.
#[test]
fn pci_bus_and_devices() {
    let dir = TempDir::new("qom-pci");
    let disk = |name: &str| {
        let p = dir.path().join(name);
        std::fs::File::create(&p)
            .and_then(|f| f.set_len(1 << 20))
            .expect("image");
        p.display().to_string()
    };
    let d0 = format!("file={},format=raw,if=none,id=d0", disk("a.img"));
    let d1 = format!("file={},format=raw,if=none,id=d1", disk("b.img"));
    let d2 = format!("file={},format=raw,if=virtio", disk("c.img"));
    let (_vmm, mut qmp) = start(&[
        "-drive",
        &d0,
        "-drive",
        &d1,
        "-drive",
        &d2,
        "-device",
        "virtio-blk-pci,drive=d0,id=disk0,serial=abc,logical_block_size=4096,physical_block_size=4096",
        "-device",
        "virtio-blk-pci,drive=d1,addr=0x5",
    ]);
    let machine = qmp.qom_props("/machine");
    assert_eq!(machine["i440fx"], "child<i440FX-pcihost>");
    let host = qmp.qom_props("/machine/i440fx");
    assert_eq!(host["pci.0"], "child<PCI>");
    let bus = qmp.qom_props("/machine/i440fx/pci.0");
    assert_eq!(bus["type"], "string");
    assert_eq!(bus["realized"], "bool");
    assert_eq!(bus["hotplug-handler"], "link<hotplug-handler>");
    assert_eq!(qmp.qom_get("/machine/i440fx/pci.0", "type"), "PCI");

    // The bus's child[N] links reach every function query-pci lists,
    // board functions first, the -device ones after in command-line
    // order (the if=virtio drive's device comes last, as in QEMU).
    let pci = qmp.ok("query-pci", json!({}));
    let mut listed: BTreeSet<i64> = BTreeSet::new();
    for d in pci[0]["devices"].as_array().expect("devices") {
        let slot = d["slot"].as_i64().unwrap_or(-1);
        let function = d["function"].as_i64().unwrap_or(-1);
        listed.insert(slot * 8 + function);
    }
    let mut reached = BTreeSet::new();
    let mut order = Vec::new();
    for n in 0..bus.keys().filter(|k| k.starts_with("child[")).count() {
        let link = format!("child[{n}]");
        let path = qmp.qom_get("/machine/i440fx/pci.0", &link);
        let path = path.as_str().expect("link path").to_string();
        assert_eq!(
            format!(
                "link<{}>",
                qmp.qom_get(&path, "type").as_str().unwrap_or("")
            ),
            bus[&link]
        );
        assert_eq!(qmp.qom_get(&path, "parent_bus"), "/machine/i440fx/pci.0");
        reached.insert(qmp.qom_get(&path, "addr").as_i64().unwrap_or(-1));
        order.push(path);
    }
    assert_eq!(reached, listed);
    assert_eq!(
        order[order.len() - 3..],
        [
            "/machine/peripheral/disk0",
            "/machine/peripheral-anon/device[0]",
            "/machine/peripheral-anon/device[1]",
        ]
    );
    let i440fx = &order[0];
    assert!(
        i440fx.starts_with("/machine/unattached/device["),
        "{i440fx}"
    );
    assert_eq!(qmp.qom_get(i440fx, "type"), "i440FX");
    assert_eq!(qmp.qom_get(i440fx, "addr"), json!(0));
    assert_eq!(qmp.qom_get(&order[1], "type"), "PIIX3");
    assert_eq!(qmp.qom_get(&order[1], "multifunction"), json!(true));

    // The named device: its properties, its backend and the bus between.
    let p = "/machine/peripheral/disk0";
    let dev = qmp.qom_props(p);
    assert_eq!(dev["virtio-backend"], "child<virtio-blk-device>");
    assert_eq!(dev["virtio-bus"], "child<virtio-pci-bus>");
    assert_eq!(dev["parent_bus"], "link<bus>");
    assert_eq!(dev["addr"], "int32");
    assert_eq!(dev["drive"], "str");
    assert_eq!(qmp.qom_get(p, "type"), "virtio-blk-pci");
    assert_eq!(qmp.qom_get(p, "drive"), "d0");
    assert_eq!(qmp.qom_get(p, "serial"), "abc");
    assert_eq!(qmp.qom_get(p, "logical_block_size"), json!(4096));
    assert_eq!(qmp.qom_get(p, "addr"), json!(2 * 8));
    assert_eq!(qmp.qom_get(p, "romfile"), "efi-virtio.rom");
    // `auto` resolved by realize: transitional on the conventional bus.
    assert_eq!(dev["disable-legacy"], "OnOffAuto");
    assert_eq!(qmp.qom_get(p, "disable-legacy"), "off");
    assert_eq!(qmp.qom_get(p, "realized"), json!(true));
    // query-block's qdev path resolves to the backend.
    let blocks = qmp.ok("query-block", json!({}));
    let qdev = blocks
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["device"] == "d0")
        .map(|b| b["qdev"].as_str().unwrap_or("").to_string())
        .expect("d0");
    assert_eq!(qdev, "/machine/peripheral/disk0/virtio-backend");
    assert_eq!(qmp.qom_get(&qdev, "type"), "virtio-blk-device");
    assert_eq!(qmp.qom_get(&qdev, "drive"), "d0");
    assert_eq!(
        qmp.qom_get(&qdev, "parent_bus"),
        "/machine/peripheral/disk0/virtio-bus"
    );
    assert_eq!(
        qmp.qom_get(&format!("{p}/virtio-bus"), "child[0]"),
        json!(qdev)
    );
    // Anonymous devices: addr=0x5, then the if=virtio drive in the first
    // free slot after disk0's.
    assert_eq!(
        qmp.qom_get("/machine/peripheral-anon/device[0]", "addr"),
        json!(5 * 8)
    );
    assert_eq!(
        qmp.qom_get("/machine/peripheral-anon/device[0]", "drive"),
        "d1"
    );
    assert_eq!(
        qmp.qom_get("/machine/peripheral-anon/device[1]", "addr"),
        json!(3 * 8)
    );
    // A realized device's properties are fixed.
    assert_eq!(
        qmp.err(
            "qom-set",
            json!({"path": p, "property": "serial", "value": "x"})
        ),
        generic("Attempt to set property 'serial' on device 'disk0' (type 'virtio-blk-pci') after it was realized")
    );
}

#[test]
fn memory_backends_and_query_memdev() {
    let dir = TempDir::new("memfile");
    let (vmm, mut qmp) = start(&["-object", "memory-backend-ram,id=ram0,size=4M,prealloc=on"]);
    assert_eq!(
        qmp.err(
            "object-add",
            json!({"qom-type": "memory-backend-ram", "id": "zero"})
        ),
        generic("can't create backend with size 0")
    );
    assert_eq!(
        qmp.err(
            "object-add",
            json!({"qom-type": "memory-backend-file", "id": "nopath", "props": {"size": 4096}})
        ),
        generic("mem-path property not set")
    );
    qmp.ok(
        "object-add",
        json!({"qom-type": "memory-backend-file", "id": "file0",
               "props": {"size": 1048576, "mem-path": dir.path().to_str(), "share": true, "dump": false}}),
    );
    let memdevs = qmp.ok("query-memdev", json!({}));
    assert_eq!(
        memdevs,
        json!([
            {"id": "ram0", "size": 4194304, "merge": true, "dump": true, "prealloc": true,
             "host-nodes": [], "policy": "default"},
            {"id": "file0", "size": 1048576, "merge": true, "dump": false, "prealloc": false,
             "host-nodes": [], "policy": "default"},
        ])
    );
    assert_eq!(qmp.qom_get("/objects/file0", "share"), json!(true));
    assert_eq!(
        qmp.err(
            "qom-set",
            json!({"path": "/objects/ram0", "property": "size", "value": 8192})
        ),
        generic("cannot change property value")
    );
    assert_eq!(
        qmp.err(
            "object-add",
            json!({"qom-type": "memory-backend-ram", "id": "bind",
                   "props": {"size": 4096, "policy": "bind"}})
        ),
        generic("host-nodes must be set for policy bind")
    );
    qmp.ok("object-del", json!({"id": "ram0"}));
    qmp.ok("object-del", json!({"id": "file0"}));
    assert_eq!(qmp.ok("query-memdev", json!({})), json!([]));

    // share (every backend) and align (file backends), as QEMU's: the
    // kernel's map shows a shared mapping, and the file mapped at an
    // address that is a multiple of align.
    let maps = || std::fs::read_to_string(format!("/proc/{}/maps", vmm.child.id())).expect("maps");
    let shared_anon = |m: &str| {
        m.lines()
            .filter(|l| l.contains(" rw-s ") && l.contains("/dev/zero"))
            .count()
    };
    let before = shared_anon(&maps());
    qmp.ok(
        "object-add",
        json!({"qom-type": "memory-backend-ram", "id": "sh", "props": {"size": 1048576, "share": true}}),
    );
    assert_eq!(qmp.qom_get("/objects/sh", "share"), json!(true));
    assert_eq!(shared_anon(&maps()), before + 1);
    let aligned = dir.path().join("aligned");
    qmp.ok(
        "object-add",
        json!({"qom-type": "memory-backend-file", "id": "al",
               "props": {"size": 65536, "mem-path": aligned.to_str(), "align": 2097152}}),
    );
    assert_eq!(qmp.qom_get("/objects/al", "align"), json!(2097152));
    let line = maps()
        .lines()
        .find(|l| l.ends_with(aligned.to_str().expect("path")))
        .expect("the file is mapped")
        .to_string();
    let start = u64::from_str_radix(line.split('-').next().expect("range"), 16).expect("hex");
    assert_eq!(start % 2097152, 0, "{line}");
    assert_eq!(
        qmp.err(
            "object-add",
            json!({"qom-type": "memory-backend-file", "id": "odd",
                   "props": {"size": 65536, "mem-path": aligned.to_str(), "align": 1000}})
        ),
        generic("alignment 0x3e8 must be multiples of page size 0x1000")
    );
    assert_eq!(
        qmp.err(
            "qom-set",
            json!({"path": "/objects/al", "property": "align", "value": 4096})
        ),
        generic("cannot change property value")
    );
}

#[test]
fn bad_object_on_the_command_line_fails_start() {
    start_fails(
        &["-nodefaults", "-object", "secret,id=s0"],
        "Either 'file' or 'data' must be provided",
    );
    start_fails(
        &["-nodefaults", "-object", "iothread,id=i,poll-grow=x"],
        "poll-grow",
    );
}

#[test]
fn qom_list_types_matches_qemu() {
    let oracle = Oracle::load();
    let theirs: BTreeMap<String, String> = oracle.reply("qom-list-types")["return"]
        .as_array()
        .expect("list")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().to_string(),
                t["parent"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let (_vmm, mut qmp) = start(&[]);
    let ours = qmp.ok("qom-list-types", json!({}));
    let ours = ours.as_array().expect("list");
    assert!(!ours.is_empty());
    for t in ours {
        let name = t["name"].as_str().unwrap_or_default();
        // QEMU leaves `abstract` out unless it is true.
        assert!(t.get("abstract").is_none(), "{t}");
        // Every concrete type vmm has is one QEMU has, with the same parent.
        assert_eq!(
            theirs.get(name).map(String::as_str),
            t["parent"].as_str(),
            "{name}"
        );
    }
    let names = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect()
    };
    let devices = names(&qmp.ok(
        "qom-list-types",
        json!({"implements": "device", "abstract": true}),
    ));
    for t in [
        "device",
        "isa-device",
        "isa-serial",
        "x86_64-cpu",
        "host-x86_64-cpu",
    ] {
        assert!(devices.contains(t), "{t}: {devices:?}");
    }
    assert!(!devices.contains("secret"));
    let creatable = names(&qmp.ok("qom-list-types", json!({"implements": "user-creatable"})));
    for t in ["secret", "iothread", "memory-backend-ram", "throttle-group"] {
        assert!(creatable.contains(t), "{t}: {creatable:?}");
    }
    assert!(!creatable.contains("memory-backend"));
    assert_eq!(
        qmp.ok("qom-list-types", json!({"implements": "bogus"})),
        json!([])
    );
}

#[test]
fn device_list_properties_matches_qemu() {
    let oracle = Oracle::load();
    let (_vmm, mut qmp) = start(&[]);
    // QEMU's answers for devices it lacks, as recorded.
    for (req, reply) in oracle.exchanges("device-list-properties") {
        if let Some(e) = reply.get("error") {
            let r = qmp.execute("device-list-properties", req["arguments"].clone());
            assert_eq!(r["error"], *e, "{req}");
        }
    }
    assert_eq!(
        qmp.err("device-list-properties", json!({"typename": "secret"})),
        generic("Parameter 'typename' expects device")
    );
    assert_eq!(
        qmp.err("device-list-properties", json!({"typename": "isa-device"})),
        generic("Parameter 'typename' expects non-abstract device type")
    );
    // QEMU 2.11.0's lists for the devices vmm has.
    let expected: &[(&str, Value)] = &[
        (
            "isa-serial",
            json!([
                {"name": "index", "type": "uint32"},
                {"name": "iobase", "type": "uint32"},
                {"name": "irq", "type": "uint32"},
                {"name": "chardev", "type": "str", "description": "ID of a chardev to use as a backend"},
                {"name": "wakeup", "type": "uint8"},
            ]),
        ),
        (
            "isa-debug-exit",
            json!([{"name": "iobase", "type": "uint32"}, {"name": "iosize", "type": "uint32"}]),
        ),
        (
            "mc146818rtc",
            json!([
                {"name": "base_year", "type": "int32"},
                {"name": "lost_tick_policy", "type": "LostTickPolicy"},
            ]),
        ),
        (
            "i8042",
            json!([
                {"name": "i8042-data[0]", "type": "child<qemu:memory-region>"},
                {"name": "i8042-cmd[0]", "type": "child<qemu:memory-region>"},
                {"name": "a20[0]", "type": "link<irq>"},
            ]),
        ),
    ];
    let as_set = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                // Key order is not part of the answer.
                let sorted: BTreeMap<&String, &Value> =
                    p.as_object().into_iter().flatten().collect();
                format!("{sorted:?}")
            })
            .collect()
    };
    for (device, list) in expected {
        let ours = qmp.ok("device-list-properties", json!({ "typename": device }));
        assert_eq!(as_set(&ours), as_set(list), "{device}");
    }
    // virtio-blk-pci: exactly the 48 properties QEMU 2.11.0 answered
    // libvirt's probe with.
    for device in ["virtio-blk-pci", "PIIX4_PM", "i440FX-pcihost", "kvm-pit"] {
        let (_, reply) = oracle
            .exchanges("device-list-properties")
            .find(|(r, _)| r["arguments"]["typename"] == device)
            .expect("device in the oracle");
        let ours = qmp.ok("device-list-properties", json!({"typename": device}));
        assert_eq!(as_set(&ours), as_set(&reply["return"]), "{device}");
    }
}

#[test]
fn the_pci_host_reports_qemus_pci_holes() {
    // 4 GiB of RAM: 3 GiB below 4 GiB, 1 GiB above; the 64-bit hole
    // (2 GiB, x-pci-hole64-fix) starts after it on a 1 GiB boundary.
    // QEMU 7.2 with -machine pc-i440fx-2.11 answers the same.
    let (_vmm, mut qmp) = start(&["-m", "4G"]);
    let host = |qmp: &mut QmpClient, p: &str| qmp.qom_get("/machine/i440fx", p);
    assert_eq!(host(&mut qmp, "pci-hole-start"), json!(0xc000_0000u64));
    assert_eq!(host(&mut qmp, "pci-hole-end"), json!(0xfec0_0000u64));
    assert_eq!(host(&mut qmp, "pci-hole64-start"), json!(5u64 << 30));
    assert_eq!(host(&mut qmp, "pci-hole64-end"), json!(7u64 << 30));
    assert_eq!(host(&mut qmp, "pci-hole64-size"), json!(2u64 << 30));
    assert_eq!(host(&mut qmp, "x-pci-hole64-fix"), json!(true));
    assert_eq!(
        qmp.qom_get("/machine/i440fx/pci-conf-idx[0]", "addr"),
        json!(0xcf8)
    );
}

#[test]
fn device_properties_are_checked_as_qemu() {
    let dir = vmm_tests::TempDir::new("devprops");
    let img = dir.path().join("d.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).expect("image");
    let drive = format!("file={},if=none,id=d0,format=raw", img.display());
    let serial = dir.path().join("com1.log");
    let run = |props: &str| {
        let dev = format!("virtio-blk-pci,drive=d0{props}");
        let args = vmm_tests::guest_args("serial", &serial, &["-drive", &drive, "-device", &dev]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (st, _, err) = vmm_tests::run_vmm(&args);
        (st, err)
    };
    let (st, err) = run(",foo=1");
    assert!(!st.success());
    assert!(
        err.contains("-device virtio-blk-pci,drive=d0,foo=1: Property '.foo' not found"),
        "{err}"
    );
    let (_, err) = run(",scsi=on");
    assert!(
        err.contains(
            "not available yet: virtio-blk-pci property 'scsi=on' is not supported by vmm"
        ),
        "{err}"
    );
    // What libvirt passes, and values that change nothing, are taken:
    // the guest runs and leaves through isa-debug-exit (status 1).
    let (_, err) = run(",bus=pci.1");
    assert!(err.contains("Bus 'pci.1' not found"), "{err}");
    let (st, err) = run(
        ",bus=pci.0,addr=0x4,id=virtio-disk0,scsi=off,bootindex=1,disable-legacy=on,ioeventfd=off,event_idx=on",
    );
    assert_eq!(st.code(), Some(1), "{err}");
    let (st, _, err) = vmm_tests::run_vmm(&[
        "-nodefaults",
        "-display",
        "none",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4,foo=1",
    ]);
    assert!(!st.success());
    assert!(
        err.contains(
            "-device isa-debug-exit,iobase=0xf4,iosize=4,foo=1: Property '.foo' not found"
        ),
        "{err}"
    );
}

#[test]
fn throttle_groups() {
    let (_vmm, mut qmp) = start(&[
        "-object",
        "throttle-group,id=cmd,x-iops-total=100,x-iops-total-max=200",
    ]);
    let limits = qmp.qom_get("/objects/cmd", "limits");
    assert_eq!(limits["iops-total"], json!(100));
    assert_eq!(limits["iops-total-max"], json!(200));
    assert_eq!(limits["bps-read-max-length"], json!(1));
    assert_eq!(limits.as_object().map(|m| m.len()), Some(19));
    assert_eq!(qmp.qom_get("/objects/cmd", "x-iops-total"), json!(100));

    let add = |qmp: &mut QmpClient, props: Value| {
        qmp.err(
            "object-add",
            json!({"qom-type": "throttle-group", "id": "bad", "props": props}),
        )
    };
    assert_eq!(
        add(&mut qmp, json!({"x-bps-total": 1, "x-bps-read": 1})),
        generic("bps/iops/max total values and read/write values cannot be used at the same time")
    );
    assert_eq!(
        add(&mut qmp, json!({"x-bps-total-max": 10})),
        generic("bps_max/iops_max require corresponding bps/iops values")
    );
    assert_eq!(
        add(&mut qmp, json!({"x-iops-size": 4096})),
        generic("iops size requires an iops value to be set")
    );
    assert_eq!(
        add(&mut qmp, json!({"x-bps-total": -1})),
        generic("Property values cannot be negative")
    );
    assert_eq!(
        add(
            &mut qmp,
            json!({"limits": {"bps-total": 10, "bps-total-max": 5}})
        ),
        generic("bps_max/iops_max cannot be lower than bps/iops")
    );

    // After creation, only `limits` changes the group, and only to a
    // valid configuration.
    qmp.ok(
        "object-add",
        json!({"qom-type": "throttle-group", "id": "tg", "props": {"limits": {"bps-total": 1000}}}),
    );
    assert_eq!(
        qmp.err(
            "qom-set",
            json!({"path": "/objects/tg", "property": "x-bps-total", "value": 5})
        ),
        generic("Property cannot be set after initialization")
    );
    qmp.ok(
        "qom-set",
        json!({"path": "/objects/tg", "property": "limits", "value": {"bps-total": 2000, "bps-total-max": 4000}}),
    );
    let limits = qmp.qom_get("/objects/tg", "limits");
    assert_eq!(limits["bps-total"], json!(2000));
    assert_eq!(limits["bps-total-max"], json!(4000));
    assert_eq!(
        qmp.err(
            "qom-set",
            json!({"path": "/objects/tg", "property": "limits", "value": {"bps-read": 1}})
        ),
        generic("bps/iops/max total values and read/write values cannot be used at the same time")
    );
    qmp.ok("object-del", json!({"id": "tg"}));
    qmp.ok("object-del", json!({"id": "cmd"}));
}
