//! `info` subcommands that turn a QMP answer (or the object tree) into
//! the text QEMU 2.11's monitor prints for it: block devices and their
//! images, block statistics, internal snapshots, PCI devices, migration
//! state, memory backends and the QOM composition tree.

use super::{str_arg, Ctx};
use crate::hmp::parse::{Arg, Args};
use block::{BlockGraph, Node};
use qmp::qapi::*;
use qmp::visit::ToQObject;
use qmp::Error;
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::Arc;

fn flag(args: &Args, key: &str) -> bool {
    args.get(key) == Some(&Arg::Bool(true))
}

/// A size as QEMU 2.11's block layer shows it: bytes up to 999, then one
/// decimal below ten units and whole units above (`1.5K`, `64M`).
pub(super) fn human_size(size: i64) -> String {
    if size <= 999 {
        return size.to_string();
    }
    const SUFFIXES: [char; 4] = ['K', 'M', 'G', 'T'];
    let mut base: i64 = 1024;
    for (i, s) in SUFFIXES.iter().enumerate() {
        if size < 10 * base {
            return format!("{:.1}{s}", size as f64 / base as f64);
        }
        if size < 1000 * base || i == SUFFIXES.len() - 1 {
            return format!("{}{s}", (size + (base >> 1)) / base);
        }
        base *= 1024;
    }
    size.to_string()
}

/// A time in seconds since the epoch as local `YYYY-MM-DD HH:MM:SS`.
fn local_date(secs: i64) -> String {
    let t = secs as libc::time_t;
    // SAFETY: localtime_r only writes the tm it is given.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return String::new();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// The column titles of a snapshot table.
fn snapshot_header(out: &mut String) {
    let _ = write!(
        out,
        "{:<10}{:<20}{:>7}{:>20}{:>15}",
        "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK"
    );
}

/// One snapshot as a table row; `id` replaces the snapshot's own ID.
fn snapshot_row(out: &mut String, sn: &SnapshotInfo, id: &str) {
    let clock_ns = sn
        .vm_clock_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(sn.vm_clock_nsec);
    let (secs, ms) = (clock_ns / 1_000_000_000, clock_ns / 1_000_000 % 1000);
    let (h, m) = (secs / 3600, secs / 60 % 60);
    let clock = format!("{h:02}:{m:02}:{:02}.{ms:03}", secs % 60);
    let _ = write!(
        out,
        "{:<10}{:<20}{:>7}{:>20}{:>15}",
        id,
        sn.name,
        human_size(sn.vm_state_size),
        local_date(sn.date_sec),
        clock
    );
}

/// QEMU's QDict hash: a dictionary prints its keys bucket by bucket.
fn qdict_bucket(key: &str) -> u32 {
    let mut v = 0x238F_13AFu32.wrapping_mul(key.len() as u32);
    for (i, b) in key.bytes().enumerate() {
        v = v.wrapping_add(u32::from(b) << ((i * 5) % 24));
    }
    1_103_515_243u32.wrapping_mul(v).wrapping_add(12345) % 512
}

fn dump_scalar(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Null => out.push_str("null"),
        Value::Array(_) | Value::Object(_) => {}
    }
}

/// A dictionary or list as the block layer's format-specific dump: keys
/// with dashes made blanks, nested items four columns further in,
/// dictionary keys in QDict order (hash bucket, then newest first).
fn dump_value(out: &mut String, indent: usize, v: &Value) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<(u32, usize, &String, &Value)> = m
                .iter()
                .enumerate()
                .map(|(i, (k, v))| (qdict_bucket(k), i, k, v))
                .collect();
            keys.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            for (_, _, k, v) in keys {
                dump_item(out, indent, &k.replace('-', " "), v);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                dump_item(out, indent, &format!("[{i}]"), v);
            }
        }
        _ => dump_scalar(out, v),
    }
}

/// `label: value` on one line, or `label:` above a nested dictionary or
/// list.
fn dump_item(out: &mut String, indent: usize, label: &str, v: &Value) {
    let composite = matches!(v, Value::Array(_) | Value::Object(_));
    let sep = if composite { '\n' } else { ' ' };
    let _ = write!(out, "{:w$}{label}:{sep}", "", w = indent * 4);
    dump_value(out, indent + 1, v);
    if !composite {
        out.push('\n');
    }
}

/// One image of `info block -v` (QEMU's bdrv_image_info_dump).
fn image_info_dump(out: &mut String, info: &ImageInfo) {
    let disk = info
        .actual_size
        .map_or_else(|| "unavailable".to_string(), human_size);
    let _ = writeln!(out, "image: {}", info.filename);
    let _ = writeln!(out, "file format: {}", info.format);
    let _ = writeln!(
        out,
        "virtual size: {} ({} bytes)",
        human_size(info.virtual_size),
        info.virtual_size
    );
    let _ = writeln!(out, "disk size: {disk}");
    if info.encrypted == Some(true) {
        out.push_str("encrypted: yes\n");
    }
    if let Some(c) = info.cluster_size {
        let _ = writeln!(out, "cluster_size: {c}");
    }
    if info.dirty_flag == Some(true) {
        out.push_str("cleanly shut down: no\n");
    }
    if let Some(b) = &info.backing_filename {
        let _ = write!(out, "backing file: {b}");
        match &info.full_backing_filename {
            None => out.push_str(" (cannot determine actual path)"),
            Some(full) if full != b => {
                let _ = write!(out, " (actual path: {full})");
            }
            Some(_) => {}
        }
        out.push('\n');
        if let Some(f) = &info.backing_filename_format {
            let _ = writeln!(out, "backing file format: {f}");
        }
    }
    if let Some(list) = &info.snapshots {
        out.push_str("Snapshot list:\n");
        snapshot_header(out);
        out.push('\n');
        for sn in list {
            snapshot_row(out, sn, &sn.id);
            out.push('\n');
        }
    }
    if let Some(spec) = &info.format_specific {
        out.push_str("Format specific information:\n");
        if let Some(data) = spec.to_qobject().get("data") {
            dump_value(out, 1, data);
        }
    }
}

/// One backend or node of `info block` (QEMU's print_block_info).
fn print_block_info(
    out: &mut String,
    info: Option<&BlockInfo>,
    inserted: Option<&BlockDeviceInfo>,
    verbose: bool,
) {
    let node_name = inserted.and_then(|i| i.node_name.as_deref());
    match info {
        Some(b) if !b.device.is_empty() => {
            out.push_str(&b.device);
            if let Some(n) = node_name {
                let _ = write!(out, " ({n})");
            }
        }
        _ => out.push_str(
            node_name
                .or_else(|| info.and_then(|b| b.qdev.as_deref()))
                .unwrap_or("<anonymous>"),
        ),
    }
    match inserted {
        Some(i) => {
            let _ = writeln!(
                out,
                ": {} ({}{}{})",
                i.file,
                i.drv,
                if i.ro { ", read-only" } else { "" },
                if i.encrypted { ", encrypted" } else { "" }
            );
        }
        None => out.push_str(": [not inserted]\n"),
    }
    if let Some(b) = info {
        if let Some(q) = &b.qdev {
            let _ = writeln!(out, "    Attached to:      {q}");
        }
        if let Some(s) = b.io_status.filter(|s| *s != BlockDeviceIoStatus::Ok) {
            let _ = writeln!(out, "    I/O status:       {}", s.as_str());
        }
        if b.removable {
            let _ = writeln!(
                out,
                "    Removable device: {}locked, tray {}",
                if b.locked { "" } else { "not " },
                if b.tray_open == Some(true) {
                    "open"
                } else {
                    "closed"
                }
            );
        }
    }
    let Some(i) = inserted else { return };
    let _ = writeln!(
        out,
        "    Cache mode:       {}{}{}",
        if i.cache.writeback {
            "writeback"
        } else {
            "writethrough"
        },
        if i.cache.direct { ", direct" } else { "" },
        if i.cache.no_flush {
            ", ignore flushes"
        } else {
            ""
        }
    );
    if let Some(b) = &i.backing_file {
        let _ = writeln!(
            out,
            "    Backing file:     {b} (chain depth: {})",
            i.backing_file_depth
        );
    }
    if i.detect_zeroes != BlockdevDetectZeroesOptions::Off {
        let _ = writeln!(out, "    Detect zeroes:    {}", i.detect_zeroes.as_str());
    }
    if i.bps != 0
        || i.bps_rd != 0
        || i.bps_wr != 0
        || i.iops != 0
        || i.iops_rd != 0
        || i.iops_wr != 0
    {
        let z = |v: Option<i64>| v.unwrap_or(0);
        let _ = writeln!(
            out,
            "    I/O throttling:   bps={} bps_rd={} bps_wr={} bps_max={} bps_rd_max={} \
             bps_wr_max={} iops={} iops_rd={} iops_wr={} iops_max={} iops_rd_max={} \
             iops_wr_max={} iops_size={} group={}",
            i.bps,
            i.bps_rd,
            i.bps_wr,
            z(i.bps_max),
            z(i.bps_rd_max),
            z(i.bps_wr_max),
            i.iops,
            i.iops_rd,
            i.iops_wr,
            z(i.iops_max),
            z(i.iops_rd_max),
            z(i.iops_wr_max),
            z(i.iops_size),
            i.group.as_deref().unwrap_or("")
        );
    }
    if verbose {
        out.push_str("\nImages:\n");
        let mut image = Some(&i.image);
        while let Some(im) = image {
            image_info_dump(out, im);
            image = im.backing_image.as_deref();
        }
    }
}

/// `info block [-n] [-v] [device]`: the backends of query-block, or with
/// `-n` (or a device that names no backend) the nodes of
/// query-named-block-nodes.
pub(super) fn info_block(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let device = str_arg(args, "device");
    let verbose = flag(args, "verbose");
    let nodes = flag(args, "nodes");
    let mut printed = false;
    if !nodes {
        let list = ctx.vmm.query_block()?;
        for (n, b) in list.iter().enumerate() {
            if device.is_some_and(|d| d != b.device) {
                continue;
            }
            // As QEMU: a blank line before every entry but the list's
            // first, printed or not.
            if n > 0 {
                ctx.out.push('\n');
            }
            print_block_info(&mut ctx.out, Some(b), b.inserted.as_ref(), verbose);
            printed = true;
        }
    }
    if (device.is_none() && !nodes) || printed {
        return Ok(());
    }
    let list = ctx.vmm.query_named_block_nodes()?;
    for (n, b) in list.iter().enumerate() {
        if device.is_some_and(|d| Some(d) != b.node_name.as_deref()) {
            continue;
        }
        if n > 0 {
            ctx.out.push('\n');
        }
        print_block_info(&mut ctx.out, None, Some(b), verbose);
    }
    Ok(())
}

/// `info blockstats`: one line per backend of query-blockstats.
pub(super) fn info_blockstats(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let list = ctx
        .vmm
        .query_blockstats(QueryBlockstatsArgs { query_nodes: None })?;
    for s in list {
        let Some(device) = &s.device else { continue };
        let st = &s.stats;
        let _ = writeln!(
            ctx.out,
            "{device}: rd_bytes={} wr_bytes={} rd_operations={} wr_operations={} \
             flush_operations={} wr_total_time_ns={} rd_total_time_ns={} \
             flush_total_time_ns={} rd_merged={} wr_merged={} idle_time_ns={}",
            st.rd_bytes,
            st.wr_bytes,
            st.rd_operations,
            st.wr_operations,
            st.flush_operations,
            st.wr_total_time_ns,
            st.rd_total_time_ns,
            st.flush_total_time_ns,
            st.rd_merged,
            st.wr_merged,
            st.idle_time_ns.unwrap_or(0)
        );
    }
    Ok(())
}

/// The node whose driver takes internal snapshots for `node`: itself,
/// or down its `file` children (QEMU's bdrv_can_snapshot); none when
/// read-only.
fn snapshot_node(node: &Arc<Node>) -> Option<Arc<Node>> {
    if node.read_only() {
        return None;
    }
    if node.driver_name() == "qcow2" {
        return Some(node.clone());
    }
    node.file_child().and_then(snapshot_node)
}

/// The nodes QEMU's bdrv_next visits: the roots of named backends, then
/// the nodes at the top of a tree that no backend holds.
fn all_roots(graph: &BlockGraph) -> Vec<Arc<Node>> {
    let mut roots: Vec<Arc<Node>> = graph
        .backends()
        .iter()
        .filter(|b| !b.name().is_empty())
        .filter_map(|b| b.root())
        .collect();
    let held: Vec<Arc<Node>> = graph.backends().iter().filter_map(|b| b.root()).collect();
    let all: Vec<Arc<Node>> = graph
        .query_named_block_nodes()
        .iter()
        .filter_map(|i| i.node_name.as_deref().and_then(|n| graph.find_node(n)))
        .collect();
    let is_child = |n: &Arc<Node>| {
        all.iter().any(|p| {
            p.file_child().is_some_and(|c| Arc::ptr_eq(c, n))
                || p.backing_child().is_some_and(|c| Arc::ptr_eq(c, n))
        })
    };
    for n in &all {
        if !held.iter().any(|h| Arc::ptr_eq(h, n)) && !is_child(n) {
            roots.push(n.clone());
        }
    }
    roots
}

/// `info snapshots` (QEMU 2.11's hmp_info_snapshots): the snapshots of
/// the first disk that can take them which every such disk has, then
/// each disk's others.
pub(super) fn info_snapshots(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let graph = &ctx.vmm.block;
    // (device name, snapshot node) of every disk that can snapshot.
    let disks: Vec<(String, Arc<Node>)> = all_roots(graph)
        .iter()
        .filter_map(|n| snapshot_node(n).map(|s| (n.device_name(), s)))
        .collect();
    let Some((_, first)) = disks.first() else {
        ctx.out
            .push_str("No available block device supports snapshots\n");
        return Ok(());
    };
    let vmstate = graph.snapshots_of(first);
    let mut per_disk: Vec<(String, Vec<SnapshotInfo>)> = disks
        .iter()
        .map(|(name, n)| (name.clone(), graph.snapshots_of(n)))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    if per_disk.is_empty() {
        ctx.out.push_str("There is no snapshot available.\n");
        return Ok(());
    }
    let everywhere: Vec<&SnapshotInfo> = vmstate
        .iter()
        .filter(|sn| {
            disks.iter().all(|(_, n)| {
                graph
                    .snapshots_of(n)
                    .iter()
                    .any(|s| s.id == sn.name || s.name == sn.name)
            })
        })
        .collect();
    for sn in &everywhere {
        for (_, list) in per_disk.iter_mut() {
            list.retain(|s| s.name != sn.name);
        }
    }
    let out = &mut ctx.out;
    out.push_str("List of snapshots present on all disks:\n");
    if everywhere.is_empty() {
        out.push_str("None\n");
    } else {
        snapshot_header(out);
        out.push('\n');
        for sn in &everywhere {
            // The ID may differ between disks: QEMU shows "--".
            snapshot_row(out, sn, "--");
            out.push('\n');
        }
    }
    for (name, list) in &per_disk {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\nList of partial (non-loadable) snapshots on '{name}':"
        );
        snapshot_header(out);
        out.push('\n');
        for sn in list {
            snapshot_row(out, sn, &sn.id);
            out.push('\n');
        }
    }
    Ok(())
}

fn pci_device(out: &mut String, dev: &PciDeviceInfo) {
    let _ = writeln!(
        out,
        "  Bus {:2}, device {:3}, function {}:",
        dev.bus, dev.slot, dev.function
    );
    out.push_str("    ");
    match &dev.class_info.desc {
        Some(d) => out.push_str(d),
        None => {
            let _ = write!(out, "Class {:04}", dev.class_info.class);
        }
    }
    let _ = writeln!(
        out,
        ": PCI device {:04x}:{:04x}",
        dev.id.vendor, dev.id.device
    );
    if let Some(irq) = dev.irq {
        let _ = writeln!(out, "      IRQ {irq}.");
    }
    if let Some(br) = &dev.pci_bridge {
        let b = &br.bus;
        let _ = writeln!(out, "      BUS {}.", b.number);
        let _ = writeln!(out, "      secondary bus {}.", b.secondary);
        let _ = writeln!(out, "      subordinate bus {}.", b.subordinate);
        let _ = writeln!(
            out,
            "      IO range [0x{:04x}, 0x{:04x}]",
            b.io_range.base, b.io_range.limit
        );
        let _ = writeln!(
            out,
            "      memory range [0x{:08x}, 0x{:08x}]",
            b.memory_range.base, b.memory_range.limit
        );
        let _ = writeln!(
            out,
            "      prefetchable memory range [0x{:08x}, 0x{:08x}]",
            b.prefetchable_range.base, b.prefetchable_range.limit
        );
    }
    for r in &dev.regions {
        let addr = r.address as u64;
        let last = addr.wrapping_add(r.size as u64).wrapping_sub(1);
        let _ = write!(out, "      BAR{}: ", r.bar);
        if r.r#type == "io" {
            let _ = writeln!(out, "I/O at 0x{addr:04x} [0x{last:04x}].");
        } else {
            let _ = writeln!(
                out,
                "{} bit{} memory at 0x{addr:08x} [0x{last:08x}].",
                if r.mem_type_64 == Some(true) { 64 } else { 32 },
                if r.prefetch == Some(true) {
                    " prefetchable"
                } else {
                    ""
                }
            );
        }
    }
    let _ = writeln!(out, "      id \"{}\"", dev.qdev_id);
    if let Some(children) = dev.pci_bridge.as_ref().and_then(|b| b.devices.as_ref()) {
        for c in children {
            pci_device(out, c);
        }
    }
}

/// `info pci`: every function of query-pci, bridges followed by what is
/// behind them.
pub(super) fn info_pci(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let Ok(buses) = ctx.vmm.query_pci() else {
        ctx.out.push_str("PCI devices not supported\n");
        return Ok(());
    };
    for bus in &buses {
        for dev in &bus.devices {
            pci_device(&mut ctx.out, dev);
        }
    }
    Ok(())
}

/// The globals line QEMU 2.11's `info migrate` starts with: the
/// migration object's defaults, which no command of 2.11 changes.
const MIGRATION_GLOBALS: &str = "globals: store-global-state=1, only_migratable=0, \
     send-configuration=1, send-section-footer=1\n";

/// `info migrate` (QEMU 2.11's hmp_info_migrate).
pub(super) fn info_migrate(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let info = ctx.vmm.query_migrate()?;
    let caps = ctx.vmm.query_migrate_capabilities()?;
    let out = &mut ctx.out;
    out.push_str(MIGRATION_GLOBALS);
    if info.status.is_some() && !caps.is_empty() {
        out.push_str("capabilities: ");
        for c in &caps {
            let _ = write!(
                out,
                "{}: {} ",
                c.capability.as_str(),
                if c.state { "on" } else { "off" }
            );
        }
        out.push('\n');
    }
    if let Some(status) = info.status {
        let _ = write!(out, "Migration status: {}", status.as_str());
        match &info.error_desc {
            Some(e) if status == MigrationStatus::Failed => {
                let _ = writeln!(out, " ({e})");
            }
            _ => out.push('\n'),
        }
        let _ = writeln!(
            out,
            "total time: {} milliseconds",
            info.total_time.unwrap_or(0)
        );
        if let Some(t) = info.expected_downtime {
            let _ = writeln!(out, "expected downtime: {t} milliseconds");
        }
        if let Some(t) = info.downtime {
            let _ = writeln!(out, "downtime: {t} milliseconds");
        }
        if let Some(t) = info.setup_time {
            let _ = writeln!(out, "setup: {t} milliseconds");
        }
    }
    if let Some(r) = &info.ram {
        let _ = writeln!(out, "transferred ram: {} kbytes", r.transferred >> 10);
        let _ = writeln!(out, "throughput: {:.2} mbps", r.mbps);
        let _ = writeln!(out, "remaining ram: {} kbytes", r.remaining >> 10);
        let _ = writeln!(out, "total ram: {} kbytes", r.total >> 10);
        let _ = writeln!(out, "duplicate: {} pages", r.duplicate);
        let _ = writeln!(out, "skipped: {} pages", r.skipped);
        let _ = writeln!(out, "normal: {} pages", r.normal);
        let _ = writeln!(out, "normal bytes: {} kbytes", r.normal_bytes >> 10);
        let _ = writeln!(out, "dirty sync count: {}", r.dirty_sync_count);
        let _ = writeln!(out, "page size: {} kbytes", r.page_size >> 10);
        if r.dirty_pages_rate != 0 {
            let _ = writeln!(out, "dirty pages rate: {} pages", r.dirty_pages_rate);
        }
        if r.postcopy_requests != 0 {
            let _ = writeln!(out, "postcopy request count: {}", r.postcopy_requests);
        }
    }
    if let Some(d) = &info.disk {
        let _ = writeln!(out, "transferred disk: {} kbytes", d.transferred >> 10);
        let _ = writeln!(out, "remaining disk: {} kbytes", d.remaining >> 10);
        let _ = writeln!(out, "total disk: {} kbytes", d.total >> 10);
    }
    if let Some(x) = &info.xbzrle_cache {
        let _ = writeln!(out, "cache size: {} bytes", x.cache_size);
        let _ = writeln!(out, "xbzrle transferred: {} kbytes", x.bytes >> 10);
        let _ = writeln!(out, "xbzrle pages: {} pages", x.pages);
        let _ = writeln!(out, "xbzrle cache miss: {}", x.cache_miss);
        let _ = writeln!(out, "xbzrle cache miss rate: {:.2}", x.cache_miss_rate);
        let _ = writeln!(out, "xbzrle overflow : {}", x.overflow);
    }
    if let Some(p) = info.cpu_throttle_percentage {
        let _ = writeln!(out, "cpu throttle percentage: {p}");
    }
    Ok(())
}

/// `info migrate_capabilities`: one `name: on|off` line each.
pub(super) fn info_migrate_capabilities(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    for c in ctx.vmm.query_migrate_capabilities()? {
        let _ = writeln!(
            ctx.out,
            "{}: {}",
            c.capability.as_str(),
            if c.state { "on" } else { "off" }
        );
    }
    Ok(())
}

/// `info migrate_parameters`: the parameters in QEMU's order, with its
/// units.
pub(super) fn info_migrate_parameters(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let p = ctx.vmm.query_migrate_parameters()?;
    let out = &mut ctx.out;
    fn num(out: &mut String, name: &str, v: Option<i64>, unit: &str) {
        if let Some(v) = v {
            let _ = writeln!(out, "{name}: {v}{unit}");
        }
    }
    num(out, "compress-level", p.compress_level, "");
    num(out, "compress-threads", p.compress_threads, "");
    num(out, "decompress-threads", p.decompress_threads, "");
    num(out, "cpu-throttle-initial", p.cpu_throttle_initial, "");
    num(out, "cpu-throttle-increment", p.cpu_throttle_increment, "");
    if let Some(s) = &p.tls_creds {
        let _ = writeln!(out, "tls-creds: '{s}'");
    }
    if let Some(s) = &p.tls_hostname {
        let _ = writeln!(out, "tls-hostname: '{s}'");
    }
    num(out, "max-bandwidth", p.max_bandwidth, " bytes/second");
    num(out, "downtime-limit", p.downtime_limit, " milliseconds");
    num(out, "x-checkpoint-delay", p.x_checkpoint_delay, "");
    if let Some(b) = p.block_incremental {
        let _ = writeln!(out, "block-incremental: {}", if b { "on" } else { "off" });
    }
    num(out, "x-multifd-channels", p.x_multifd_channels, "");
    num(out, "x-multifd-page-count", p.x_multifd_page_count, "");
    if let Some(v) = p.xbzrle_cache_size {
        let _ = writeln!(out, "xbzrle-cache-size: {v}");
    }
    Ok(())
}

/// `info migrate_cache_size`, in KiB, with QEMU's spelling.
pub(super) fn info_migrate_cache_size(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let bytes = ctx.vmm.query_migrate_cache_size()?;
    let _ = writeln!(ctx.out, "xbzrel cache size: {} kbytes", bytes >> 10);
    Ok(())
}

/// A list of numbers as QEMU's string output visitor writes it:
/// consecutive runs as ranges (`0-2,5`).
fn ranges(nodes: &[u16]) -> String {
    let mut sorted = nodes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// `info memdev`: every memory backend of query-memdev.
pub(super) fn info_memdev(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    for m in ctx.vmm.query_memdev()? {
        let out = &mut ctx.out;
        let tf = |b: bool| if b { "true" } else { "false" };
        let _ = writeln!(out, "memory backend: {}", m.id.as_deref().unwrap_or(""));
        let _ = writeln!(out, "  size:  {}", m.size);
        let _ = writeln!(out, "  merge: {}", tf(m.merge));
        let _ = writeln!(out, "  dump: {}", tf(m.dump));
        let _ = writeln!(out, "  prealloc: {}", tf(m.prealloc));
        let _ = writeln!(out, "  policy: {}", m.policy.as_str());
        let _ = writeln!(out, "  host nodes: {}", ranges(&m.host_nodes));
    }
    Ok(())
}

/// `info qom-tree [path]`: the composition tree under `path` (the
/// machine by default), each object as `/name (type)`, children two
/// columns further in, in the order they were added.
pub(super) fn info_qom_tree(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    use crate::qom::tree::{ResolveError, Tree, ROOT};
    let tree = &ctx.vmm.qom.tree;
    let path = str_arg(args, "path");
    let obj = match tree.resolve(path.unwrap_or("/machine")) {
        Ok(o) => o,
        Err(ResolveError::NotFound) => {
            let _ = writeln!(
                ctx.out,
                "Path '{}' could not be resolved.",
                path.unwrap_or("/machine")
            );
            return Ok(());
        }
        Err(ResolveError::Ambiguous) => {
            let _ = writeln!(
                ctx.out,
                "Warning: Path '{}' is ambiguous.",
                path.unwrap_or("")
            );
            return Ok(());
        }
    };
    fn walk(
        tree: &Tree,
        out: &mut String,
        id: crate::qom::tree::ObjectId,
        name: &str,
        indent: usize,
    ) {
        let _ = writeln!(out, "{:indent$}/{name} ({})", "", tree.type_name(id));
        for (child, cid) in tree.children(id) {
            walk(tree, out, cid, child, indent + 2);
        }
    }
    let name = if obj == ROOT {
        String::new()
    } else {
        tree.canonical_path(obj)
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string()
    };
    walk(tree, &mut ctx.out, obj, &name, 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_qemu_2_11_prints_them() {
        assert_eq!(human_size(0), "0");
        assert_eq!(human_size(999), "999");
        assert_eq!(human_size(1000), "1.0K");
        assert_eq!(human_size(1536), "1.5K");
        assert_eq!(human_size(200 * 1024), "200K");
        assert_eq!(human_size(64 << 20), "64M");
        assert_eq!(human_size(1 << 30), "1.0G");
        assert_eq!(human_size(5000 << 30), "4.9T");
        assert_eq!(human_size(20000i64 << 30), "20T");
    }

    #[test]
    fn qdict_order_of_qcow2_keys() {
        let mut keys = ["corrupt", "refcount-bits", "compat", "lazy-refcounts"];
        keys.sort_by_key(|k| qdict_bucket(k));
        assert_eq!(
            keys,
            ["compat", "lazy-refcounts", "refcount-bits", "corrupt"]
        );
    }

    #[test]
    fn host_node_ranges() {
        assert_eq!(ranges(&[]), "");
        assert_eq!(ranges(&[3]), "3");
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    }
}
