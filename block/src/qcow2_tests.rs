//! qcow2 against QEMU's own tools: images qemu-img makes read back
//! byte for byte, images vmm writes pass `qemu-img check` and compare
//! equal, snapshots and backing files work both ways, and mutated
//! images fail cleanly.

use crate::{BlockGraph, CreateOptions, Node};
use qmp::qapi::BlockdevOptions;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vmm-qcow2-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (scripts/setup.sh installs qemu-utils)"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn qemu_img(args: &[&str]) -> String {
    let (ok, text) = run("qemu-img", args);
    assert!(ok, "qemu-img {args:?}: {text}");
    text
}

/// `qemu-img check` finds nothing wrong with `img`.
fn check_clean(img: &str) {
    let (ok, t) = run("qemu-img", &["check", img]);
    assert!(
        ok && t.contains("No errors were found on the image."),
        "{t}"
    );
}

/// A qcow2 image vmm creates in a fresh directory: (dir, image path,
/// the graph that made it).
fn vmm_image(tag: &str, file: &str, create: &CreateOptions) -> (PathBuf, String, BlockGraph) {
    let d = dir(tag);
    let img = d.join(file).to_str().unwrap().to_string();
    let mut g = BlockGraph::new();
    g.create_qcow2(&img, create).unwrap();
    (d, img, g)
}

fn opts(v: serde_json::Value) -> BlockdevOptions {
    qmp::visit::from_value(&v).expect("valid options")
}

fn open(g: &mut BlockGraph, path: &str, name: &str, extra: serde_json::Value) -> Arc<Node> {
    let mut o = json!({
        "driver": "qcow2",
        "node-name": name,
        "file": {"driver": "file", "filename": path},
    });
    if let (Some(m), Some(e)) = (o.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    g.blockdev_add(&opts(o)).expect("qcow2 opens")
}

fn read_all(n: &Node) -> Vec<u8> {
    let mut b = vec![0u8; n.size() as usize];
    n.read(0, &mut b).unwrap();
    b
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn images_made_by_qemu_read_back_identically() {
    let d = dir("read");
    // Every cluster size and every refcount width, both compat levels.
    let cases = [
        ("512", "16", "1.1"),
        ("1k", "1", "1.1"),
        ("2k", "2", "1.1"),
        ("4k", "4", "1.1"),
        ("8k", "16", "0.10"),
        ("16k", "8", "1.1"),
        ("32k", "32", "1.1"),
        ("64k", "16", "0.10"),
        ("128k", "64", "1.1"),
        ("256k", "16", "1.1"),
        ("512k", "1", "1.1"),
        ("1M", "16", "0.10"),
        ("2M", "8", "1.1"),
    ];
    for (cs, rb, compat) in cases {
        let img = d.join(format!("q-{cs}-{rb}-{compat}.qcow2"));
        let img = img.to_str().unwrap();
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("cluster_size={cs},refcount_bits={rb},compat={compat}"),
            img,
            "8M",
        ]);
        let mut cmds = vec![
            "write -P 0x11 0 64k".to_string(),
            "write -P 0x22 1000k 7k".to_string(),
            "write -P 0x33 4M 2M".to_string(),
            "write -c -P 0x44 6M 2M".to_string(),
        ];
        if compat == "1.1" {
            cmds.push("write -z 4160k 64k".to_string());
        }
        let mut args = vec!["-f", "qcow2"];
        for c in &cmds {
            args.push("-c");
            args.push(c);
        }
        args.push(img);
        let (ok, text) = run("qemu-io", &args);
        assert!(ok, "{text}");
        let raw = d.join("expected.raw");
        qemu_img(&["convert", "-O", "raw", img, raw.to_str().unwrap()]);
        let expected = std::fs::read(&raw).unwrap();

        let mut g = BlockGraph::new();
        let n = open(&mut g, img, "q", json!({"read-only": true}));
        assert_eq!(n.size(), 8 << 20);
        let got = read_all(&n);
        assert!(got == expected, "{cs} {rb} {compat}: contents differ");
        // Unaligned reads across clusters agree too.
        let mut b = vec![0u8; 70000];
        n.read(999_999, &mut b).unwrap();
        assert_eq!(&b[..], &expected[999_999..999_999 + 70000]);
        let info = g.query_named_block_nodes();
        let q = info
            .iter()
            .find(|i| i.node_name.as_deref() == Some("q"))
            .unwrap();
        let spec = serde_json::to_value(qmp::visit::ToQObject::to_qobject(&q.image)).unwrap();
        assert_eq!(spec["format"], "qcow2");
        assert_eq!(spec["format-specific"]["data"]["compat"], compat);
        assert_eq!(
            spec["format-specific"]["data"]["refcount-bits"],
            rb.parse::<u64>().unwrap()
        );
    }
}

/// Random writes, zero writes and discards on an image vmm made,
/// mirrored in memory; then qemu-img checks and compares it.
fn write_storm(tag: &str, create: CreateOptions, open_extra: serde_json::Value, seed: u64) {
    let size = create.size;
    let (d, img, mut g) = vmm_image(tag, "vmm.qcow2", &create);
    let mut mirror = vec![0u8; size as usize];
    {
        let n = open(&mut g, &img, "q", open_extra);
        let mut rng = Rng(seed);
        for i in 0..300 {
            let off = rng.below(size);
            let len = (rng.below(200_000) + 1).min(size - off);
            match rng.below(10) {
                0 => {
                    n.write_zeroes(off, len, rng.below(2) == 0).unwrap();
                    mirror[off as usize..(off + len) as usize].fill(0);
                }
                1 => {
                    // A discard may or may not zero: read back what it left.
                    n.discard(off, len).unwrap();
                    let mut b = vec![0u8; len as usize];
                    n.read(off, &mut b).unwrap();
                    mirror[off as usize..(off + len) as usize].copy_from_slice(&b);
                }
                _ => {
                    let b: Vec<u8> = (0..len).map(|j| (i as u64 * 7 + j) as u8 | 1).collect();
                    n.write(off, &b).unwrap();
                    mirror[off as usize..(off + len) as usize].copy_from_slice(&b);
                }
            }
            if i % 50 == 0 {
                n.flush().unwrap();
            }
        }
        assert!(
            read_all(&n) == mirror,
            "{tag}: vmm reads back what it wrote"
        );
    }
    g.blockdev_del("q").unwrap();
    check_clean(&img);
    let raw = d.join("mirror.raw");
    std::fs::write(&raw, &mirror).unwrap();
    let (ok, text) = run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            &img,
            raw.to_str().unwrap(),
        ],
    );
    assert!(ok, "{tag}: qemu-img compare: {text}");
}

#[test]
fn images_written_by_vmm_pass_qemu_img_check() {
    let base = CreateOptions {
        size: 16 << 20,
        ..Default::default()
    };
    write_storm("default", base.clone(), json!({"discard": "unmap"}), 1);
    write_storm(
        "small-clusters",
        CreateOptions {
            cluster_size: 512,
            refcount_bits: 64,
            ..base.clone()
        },
        json!({}),
        2,
    );
    write_storm(
        "v2",
        CreateOptions {
            version: 2,
            cluster_size: 4096,
            ..base.clone()
        },
        json!({"discard": "unmap"}),
        3,
    );
    write_storm(
        "refcount-1",
        CreateOptions {
            refcount_bits: 1,
            cluster_size: 1024,
            ..base.clone()
        },
        json!({"l2-cache-size": 2048, "refcount-cache-size": 4096}),
        4,
    );
    write_storm(
        "prealloc",
        CreateOptions {
            preallocation: qmp::qapi::PreallocMode::Metadata,
            ..base.clone()
        },
        json!({"overlap-check": "all"}),
        5,
    );
    for (tag, mode) in [
        ("falloc", qmp::qapi::PreallocMode::Falloc),
        ("full", qmp::qapi::PreallocMode::Full),
    ] {
        write_storm(
            tag,
            CreateOptions {
                size: 4 << 20,
                cluster_size: 4096,
                preallocation: mode,
                ..Default::default()
            },
            json!({}),
            7,
        );
    }
    write_storm(
        "lazy",
        CreateOptions {
            lazy_refcounts: true,
            ..base
        },
        json!({}),
        6,
    );
}

#[test]
fn allocation_seen_by_qemu_img_map() {
    let (_d, img, mut g) = vmm_image(
        "map",
        "m.qcow2",
        &CreateOptions {
            size: 4 << 20,
            ..Default::default()
        },
    );
    let img = img.as_str();
    {
        let n = open(&mut g, img, "q", json!({"discard": "unmap"}));
        n.write(0, &[0x5a; 65536]).unwrap();
        n.write(1 << 20, &[0x5a; 65536]).unwrap();
        n.write_zeroes(2 << 20, 1 << 20, true).unwrap();
        n.discard(1 << 20, 65536).unwrap();
    }
    g.blockdev_del("q").unwrap();
    let map = qemu_img(&["map", "--output=json", img]);
    let v: serde_json::Value = serde_json::from_str(&map).unwrap();
    let at = |off: u64| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|e| {
                let s = e["start"].as_u64().unwrap();
                s <= off && off < s + e["length"].as_u64().unwrap()
            })
            .cloned()
            .unwrap()
    };
    assert_eq!(at(0)["data"], true);
    assert_eq!(at(0)["zero"], false);
    assert_eq!(at(1 << 20)["zero"], true, "{map}");
    assert_eq!(at(1 << 20)["data"], false, "{map}");
    assert_eq!(at(2 << 20)["zero"], true, "{map}");
    assert_eq!(at(3 << 20)["data"], false, "{map}");
}

#[test]
fn snapshots_shared_with_qemu_img() {
    let d = dir("snap");
    let img = d.join("s.qcow2");
    let img = img.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", img, "4M"]);
    let (ok, t) = run("qemu-io", &["-c", "write -P 0x61 0 128k", img]);
    assert!(ok, "{t}");
    qemu_img(&["snapshot", "-c", "before", img]);
    let mut g = BlockGraph::new();
    {
        let n = open(&mut g, img, "q", json!({}));
        let list = g.snapshots_of(&n);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, "before");
        assert_eq!(list[0].id, "1");
        // Writing after a snapshot copies the shared cluster.
        n.write(0, &[0x62; 4096]).unwrap();
    }
    g.snapshot_internal_create("q", "mine", 5_000_000_000)
        .unwrap();
    assert_eq!(
        g.snapshot_internal_create("q", "mine", 0)
            .unwrap_err()
            .message(),
        "Snapshot with name 'mine' already exists on device 'q'"
    );
    {
        let n = g.find_node("q").unwrap();
        n.write(4096, &[0x63; 4096]).unwrap();
        let list = g.snapshots_of(&n);
        assert_eq!(list[1].id, "2");
        assert_eq!(list[1].vm_clock_sec, 5);
    }
    g.blockdev_del("q").unwrap();
    let l = qemu_img(&["snapshot", "-l", img]);
    assert!(l.contains("before") && l.contains("mine"), "{l}");
    check_clean(img);
    // Each snapshot holds the data of its moment.
    let raw = d.join("mine.raw");
    qemu_img(&[
        "convert",
        "-l",
        "snapshot.name=mine",
        "-O",
        "raw",
        img,
        raw.to_str().unwrap(),
    ]);
    let mine = std::fs::read(&raw).unwrap();
    assert!(mine[..4096].iter().all(|b| *b == 0x62));
    assert!(mine[4096..131072].iter().all(|b| *b == 0x61));
    qemu_img(&[
        "convert",
        "-l",
        "snapshot.name=before",
        "-O",
        "raw",
        img,
        raw.to_str().unwrap(),
    ]);
    let before = std::fs::read(&raw).unwrap();
    assert!(before[..131072].iter().all(|b| *b == 0x61));

    // Deleting one keeps the other and the active data.
    let _ = open(&mut g, img, "q", json!({}));
    let info = g
        .snapshot_internal_delete("q", None, Some("before"))
        .unwrap();
    assert_eq!(info.id, "1");
    assert_eq!(
        g.snapshot_internal_delete("q", Some("9"), None)
            .unwrap_err()
            .message(),
        "Snapshot with id '9' and name '(null)' does not exist on device 'q'"
    );
    g.blockdev_del("q").unwrap();
    check_clean(img);
    let l = qemu_img(&["snapshot", "-l", img]);
    assert!(!l.contains("before") && l.contains("mine"), "{l}");
    let (ok, t) = run(
        "qemu-io",
        &[
            "-c",
            "read -P 0x62 0 4k",
            "-c",
            "read -P 0x63 4k 4k",
            "-c",
            "read -P 0x61 8k 120k",
            img,
        ],
    );
    assert!(ok && !t.contains("Pattern verification failed"), "{t}");
}

#[test]
fn backing_files_relative_to_the_image() {
    let d = dir("backing");
    let base = d.join("base.raw");
    let pattern: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&base, &pattern).unwrap();
    let top = d.join("top.qcow2");
    let top = top.to_str().unwrap();
    let mut g = BlockGraph::new();
    g.create_qcow2(
        top,
        &CreateOptions {
            size: 2 << 20,
            backing_file: Some("base.raw".into()),
            backing_format: Some("raw".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let mut expected = pattern.clone();
    {
        let n = open(&mut g, top, "top", json!({}));
        assert_eq!(read_all(&n), pattern);
        n.write(70_000, &[9u8; 1000]).unwrap();
        expected[70_000..71_000].fill(9);
        n.write_zeroes(1 << 20, 65536, false).unwrap();
        expected[1 << 20..(1 << 20) + 65536].fill(0);
        assert_eq!(read_all(&n), expected);
        let info = g.query_named_block_nodes();
        let t = info
            .iter()
            .find(|i| i.node_name.as_deref() == Some("top"))
            .unwrap();
        assert_eq!(t.backing_file_depth, 1);
        assert_eq!(t.image.backing_filename_format.as_deref(), Some("raw"));
        assert_eq!(
            t.image.full_backing_filename.as_deref(),
            Some(base.to_str().unwrap())
        );
    }
    g.blockdev_del("top").unwrap();
    check_clean(top);
    let raw = d.join("expected.raw");
    std::fs::write(&raw, &expected).unwrap();
    let (ok, t) = run(
        "qemu-img",
        &["compare", "-F", "raw", top, raw.to_str().unwrap()],
    );
    assert!(ok, "{t}");
    let info = qemu_img(&["info", "--output=json", top]);
    assert!(
        info.contains("\"backing-filename\": \"base.raw\""),
        "{info}"
    );
}

#[test]
fn open_errors_as_qemu() {
    let d = dir("errors");
    let img = d.join("e.qcow2");
    let img = img.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", img, "1M"]);
    let mut bytes = std::fs::read(img).unwrap();
    let mut g = BlockGraph::new();
    let try_open = |g: &mut BlockGraph, b: &[u8]| {
        std::fs::write(img, b).unwrap();
        let o = opts(json!({"driver": "qcow2", "node-name": "e",
            "file": {"driver": "file", "filename": img}}));
        let r = g.blockdev_add(&o).map(|_| ());
        let _ = g.blockdev_del("e");
        r.err().map(|e| e.message().to_string())
    };
    bytes[4..8].copy_from_slice(&4u32.to_be_bytes());
    assert_eq!(
        try_open(&mut g, &bytes).as_deref(),
        Some("Unsupported qcow2 version 4")
    );
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    bytes[72..80].copy_from_slice(&(1u64 << 5).to_be_bytes());
    assert_eq!(
        try_open(&mut g, &bytes).as_deref(),
        Some("Unsupported qcow2 feature(s): Unknown incompatible feature: 20")
    );
    bytes[72..80].copy_from_slice(&2u64.to_be_bytes());
    assert_eq!(
        try_open(&mut g, &bytes).as_deref(),
        Some("qcow2: Image is corrupt; cannot be opened read/write")
    );
    bytes[72..80].copy_from_slice(&0u64.to_be_bytes());
    bytes[32..36].copy_from_slice(&1u32.to_be_bytes());
    assert_eq!(
        try_open(&mut g, &bytes).as_deref(),
        Some("Use of AES-CBC encrypted qcow2 images is no longer supported in system emulators")
    );
    bytes[32..36].copy_from_slice(&0u32.to_be_bytes());
    assert_eq!(try_open(&mut g, &bytes), None);

    // LUKS-encrypted qcow2 (crypt method 2) needs its secret (and the
    // LUKS driver). The header is enough: qemu-img's own LUKS creation
    // times PBKDF2 and fails on a loaded host.
    let enc = d.join("enc.qcow2");
    let enc = enc.to_str().unwrap();
    bytes[32..36].copy_from_slice(&2u32.to_be_bytes());
    std::fs::write(enc, &bytes).unwrap();
    let o = opts(json!({"driver": "qcow2", "node-name": "enc",
        "file": {"driver": "file", "filename": enc}}));
    assert_eq!(
        g.blockdev_add(&o)
            .err()
            .map(|e| e.message().to_string())
            .as_deref(),
        Some("Parameter 'encrypt.key-secret' is required for cipher")
    );
}

/// Seeded mutations of a small image: opening, reading and writing a
/// mutated image ends in an error or in success, never in a panic, a
/// huge allocation or an endless loop.
#[test]
fn mutated_images_fail_cleanly() {
    let d = dir("fuzz");
    let img = d.join("f.qcow2");
    let img = img.to_str().unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4k",
        img,
        "1M",
    ]);
    let (ok, t) = run(
        "qemu-io",
        &["-c", "write -P 1 0 64k", "-c", "write -c -P 2 512k 8k", img],
    );
    assert!(ok, "{t}");
    qemu_img(&["snapshot", "-c", "s", img]);
    let good = std::fs::read(img).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let rounds = std::env::var("VMM_QCOW2_FUZZ_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(300);
    for round in 0..rounds {
        let mut b = good.clone();
        // Every fourth image claims to be dirty: opening it runs the
        // check and repair on the mutated tables.
        if round % 4 == 0 {
            b[79] |= 1;
        }
        for _ in 0..1 + rng.below(4) {
            // Mostly the metadata clusters at the start.
            let at = if rng.below(4) == 0 {
                rng.below(b.len() as u64)
            } else {
                rng.below(6 * 4096)
            } as usize;
            match rng.below(4) {
                0 => b[at] ^= 1 << rng.below(8),
                1 => b[at] = 0xff,
                2 => b[at] = rng.below(256) as u8,
                _ => {
                    // A whole table entry: a random offset, cluster
                    // aligned or not, with random flags.
                    let at = (at & !7).min(b.len() - 8);
                    let v = rng.next() & (0xc0ff_ffff_ffff_ffff >> rng.below(40));
                    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
                }
            }
        }
        std::fs::write(img, &b).unwrap();
        let mut g = BlockGraph::new();
        let o = opts(json!({"driver": "qcow2", "node-name": "f",
            "file": {"driver": "file", "filename": img}}));
        let Ok(n) = g.blockdev_add(&o) else { continue };
        let size = n.size().min(4 << 20);
        let mut buf = vec![0u8; 65536];
        let mut pos = 0;
        while pos < size {
            let len = (size - pos).min(65536) as usize;
            let _ = n.read(pos, &mut buf[..len]);
            pos += 65536;
        }
        let _ = n.write(rng.below(size.max(1)), &[round as u8; 3000]);
        let _ = n.write_zeroes(0, 8192, true);
        let _ = n.flush();
        drop(n);
        let _ = g.blockdev_del("f");
    }
}

#[test]
fn lazy_refcounts_repaired_after_a_crash() {
    let (_d, img, mut g) = vmm_image(
        "lazy",
        "l.qcow2",
        &CreateOptions {
            size: 8 << 20,
            lazy_refcounts: true,
            ..Default::default()
        },
    );
    let img = img.as_str();
    let n = open(&mut g, img, "l", json!({}));
    for i in 0..40u64 {
        n.write(i * 150_000, &[i as u8 + 1; 5000]).unwrap();
    }
    n.flush().unwrap();
    // A crash: the process never closes the image.
    std::mem::forget(n);
    std::mem::forget(g);
    let (_, t) = run("qemu-img", &["info", img]);
    assert!(t.contains("cleanly shut down: no"), "{t}");
    let mut g = BlockGraph::new();
    let n = open(&mut g, img, "l", json!({}));
    let mut b = vec![0u8; 5000];
    n.read(39 * 150_000, &mut b).unwrap();
    assert!(b.iter().all(|x| *x == 40));
    drop(n);
    g.blockdev_del("l").unwrap();
    check_clean(img);
}

#[test]
fn resize_grows_the_l1_table() {
    let (_d, img, mut g) = vmm_image(
        "resize",
        "r.qcow2",
        &CreateOptions {
            size: 1 << 20,
            cluster_size: 512,
            ..Default::default()
        },
    );
    let img = img.as_str();
    let _n = open(&mut g, img, "r", json!({}));
    g.block_resize(None, Some("r"), 64 << 20).unwrap();
    let n = g.find_node("r").unwrap();
    n.write((64 << 20) - 512, &[7; 512]).unwrap();
    drop(n);
    drop(_n);
    g.blockdev_del("r").unwrap();
    let info = qemu_img(&["info", "--output=json", img]);
    assert!(info.contains("\"virtual-size\": 67108864"), "{info}");
    check_clean(img);
}
