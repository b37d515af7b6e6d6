//! Unit tests of the graph: opening, deleting, permissions, resizing.

use crate::{BlockError, BlockGraph};
use qmp::qapi::BlockdevOptions;
use serde_json::json;

fn opts(v: serde_json::Value) -> BlockdevOptions {
    qmp::visit::from_value(&v).expect("valid options")
}

fn image(tag: &str, len: u64) -> String {
    let dir = std::env::temp_dir().join(format!("block-graph-{tag}-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join("disk.img");
    std::fs::File::create(&p).unwrap().set_len(len).unwrap();
    p.to_string_lossy().into_owned()
}

fn msg(r: crate::Result<impl Sized>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.message().to_string(),
    }
}

#[test]
fn null_nodes_and_names() {
    let mut g = BlockGraph::new();
    assert_eq!(
        msg(g.blockdev_add(&opts(json!({"driver": "null-co"})))),
        "'node-name' must be specified for the root node"
    );
    let n = g
        .blockdev_add(&opts(json!({"driver": "null-co", "node-name": "n0"})))
        .unwrap();
    assert_eq!(n.size(), 1 << 30);
    assert_eq!(
        msg(g.blockdev_add(&opts(json!({"driver": "null-aio", "node-name": "n0"})))),
        "Duplicate node name"
    );
    assert_eq!(
        msg(g.blockdev_add(&opts(json!({"driver": "null-aio", "node-name": "0bad"})))),
        "Invalid node name"
    );
    assert_eq!(
        msg(g.blockdev_add(&opts(
            json!({"driver": "null-aio", "node-name": "a".repeat(32)})
        ))),
        "Node name too long"
    );
    assert_eq!(
        msg(g.blockdev_add(&opts(
            json!({"driver": "vmdk", "node-name": "q", "file": "n0"})
        ))),
        "Unknown driver: 'vmdk'"
    );
    let info = g.query_named_block_nodes();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].file, "null-co://");
    assert_eq!(info[0].image.actual_size, None);
    g.blockdev_del("n0").unwrap();
    assert_eq!(msg(g.blockdev_del("n0")), "Cannot find node n0");
}

#[test]
fn raw_over_file_children_and_deletion() {
    let path = image("raw", 1 << 20);
    let mut g = BlockGraph::new();
    let raw = g
        .blockdev_add(&opts(json!({
            "driver": "raw", "node-name": "disk",
            "file": {"driver": "file", "filename": path}
        })))
        .unwrap();
    assert_eq!(raw.size(), 1 << 20);
    let names: Vec<String> = g
        .query_named_block_nodes()
        .into_iter()
        .filter_map(|i| i.node_name)
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names[0].starts_with("#block"), "{names:?}");
    assert_eq!(names[1], "disk");
    assert_eq!(
        msg(g.blockdev_del(&names[0])),
        format!("Node {} is not owned by the monitor", names[0])
    );
    // A second raw node over the first's file child: the child has two
    // parents now.
    g.blockdev_add(&opts(
        json!({"driver": "raw", "node-name": "win", "file": names[0], "offset": 512, "size": 1024}),
    ))
    .unwrap();
    let win = g.find_node("win").unwrap();
    assert_eq!(win.size(), 1024);
    assert!(g.query_named_block_nodes()[2].file.starts_with("json:{"));
    // Data written through the window lands at its offset.
    win.write(0, &[0xaa; 512]).unwrap();
    let mut back = [0u8; 512];
    raw.read(512, &mut back).unwrap();
    assert_eq!(back, [0xaa; 512]);
    drop((raw, win));
    g.blockdev_del("disk").unwrap();
    assert!(g.find_node(&names[0]).is_some(), "still the child of 'win'");
    g.blockdev_del("win").unwrap();
    assert!(g.query_named_block_nodes().is_empty());

    assert_eq!(
        msg(
            g.blockdev_add(&opts(json!({"driver": "raw", "node-name": "x",
            "file": {"driver": "file", "filename": path}, "offset": (2 << 20)})))
        ),
        "Offset (2097152) cannot be greater than size of the containing file (1048576)"
    );
    assert_eq!(
        msg(
            g.blockdev_add(&opts(json!({"driver": "raw", "node-name": "x",
            "file": {"driver": "file", "filename": path}, "size": 1000})))
        ),
        "Specified size is not multiple of 512"
    );
    assert_eq!(
        msg(
            g.blockdev_add(&opts(json!({"driver": "raw", "node-name": "x",
            "file": {"driver": "file", "filename": "/nonexistent/img"}})))
        ),
        "Could not open '/nonexistent/img': No such file or directory"
    );
    assert!(
        g.query_named_block_nodes().is_empty(),
        "failed opens leave nothing"
    );
    assert_eq!(
        msg(
            g.blockdev_add(&opts(json!({"driver": "file", "node-name": "x",
            "filename": path, "aio": "native"})))
        ),
        "aio=native was specified, but it requires cache.direct=on, which was not specified."
    );
}

#[test]
fn backends_permissions_and_resize() {
    let path = image("perm", 1 << 20);
    let mut g = BlockGraph::new();
    let d = g
        .drive_add(
            Some("d0"),
            &[
                ("file".into(), path.clone()),
                ("format".into(), "raw".into()),
                ("if".into(), "none".into()),
            ],
        )
        .unwrap();
    let b = d.backend;
    let root = b.root().unwrap();
    assert_eq!(
        msg(g.blockdev_del(root.name())),
        format!("Node {} is in use", root.name())
    );
    let dev = g
        .attach_device("d0", "/machine/peripheral/vd0/virtio-backend", true)
        .unwrap()
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(&dev, &b));
    assert_eq!(
        msg(g.attach_device("d0", "x", true)),
        "Drive 'd0' is already in use by another device"
    );
    // A second device on the node itself: the first does not share writes.
    let e = g.attach_device(root.name(), "other", true).err().unwrap();
    assert!(
        e.message()
            .starts_with("Conflicts with use by d0 as 'root', which does not allow 'write' on"),
        "{e}"
    );
    b.write(4096, &[1u8; 4096]).unwrap();
    assert!(b.read(1 << 20, &mut [0u8; 1]).is_err());
    g.block_resize(Some("d0"), None, 2 << 20).unwrap();
    assert_eq!(b.size(), 2 << 20);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 << 20);
    assert_eq!(
        msg(g.block_resize(Some("d0"), None, -1)),
        "Parameter 'size' expects a >0 size"
    );
    assert_eq!(
        msg(g.block_resize(Some("nope"), None, 1)),
        "Cannot find device=nope nor node_name="
    );
    let stats = g.query_blockstats(false);
    assert_eq!(stats[0].stats.wr_bytes, 4096);
    assert_eq!(stats[0].stats.invalid_rd_operations, 1);
    assert_eq!(stats[0].stats.wr_highest_offset, 8192);
    let blocks = g.query_block();
    assert_eq!(blocks[0].device, "d0");
    assert!(!blocks[0].removable);
    assert!(blocks[0].io_status.is_some());

    g.blockdev_add(&opts(
        json!({"driver": "null-co", "node-name": "nul", "read-only": true}),
    ))
    .unwrap();
    assert_eq!(
        msg(g.block_resize(None, Some("nul"), 1)),
        "Image format driver does not support resize"
    );
    let e: BlockError = g
        .attach_device("nul", "dev", true)
        .err()
        .unwrap_or(BlockError::generic("ok"));
    assert_eq!(
        e.message(),
        "ok",
        "a read-only node takes a read-only device"
    );
}

#[test]
fn drive_options() {
    let path = image("drive", 65536);
    let mut g = BlockGraph::new();
    let add = |g: &mut BlockGraph, extra: &[(&str, &str)]| {
        let mut items = vec![
            ("file".to_string(), path.clone()),
            ("if".into(), "none".into()),
        ];
        items.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        g.drive_add(None, &items)
    };
    assert_eq!(
        msg(add(&mut g, &[("cache", "bogus")])),
        "invalid cache option"
    );
    assert_eq!(msg(add(&mut g, &[("aio", "x")])), "invalid aio option");
    assert_eq!(
        msg(add(&mut g, &[("werror", "x")])),
        "'x' invalid write error action"
    );
    assert_eq!(
        msg(add(&mut g, &[("rerror", "enospc")])),
        "'enospc' invalid read error action"
    );
    assert_eq!(
        msg(add(&mut g, &[("format", "raw"), ("aio", "native")])),
        "aio=native was specified, but it requires cache.direct=on, which was not specified."
    );
    let d = add(
        &mut g,
        &[("format", "raw"), ("aio", "native"), ("cache", "none")],
    )
    .unwrap();
    assert_eq!(d.backend.name(), "none0");
    let info = g.query_block();
    assert!(info[0].inserted.as_ref().unwrap().cache.direct);
    let d = add(&mut g, &[("readonly", "on"), ("file.locking", "off")]).unwrap();
    assert_eq!(d.backend.name(), "none1");
    assert_eq!(d.warnings.len(), 1, "probing guessed raw");
    assert!(d.backend.read_only());
    assert!(d.backend.write(0, &[0; 512]).is_err());
}
